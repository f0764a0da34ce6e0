"""Many observations of a prometheus-client histogram in one write.

The metrics of one event-loop pass are written together (metrics.PassTotals);
at 64 clients a pass holds dozens of observations of the same histogram, and
``observe`` writes the sum and a bucket for every value (in multiprocess mode,
each a locked write to a memory-mapped file).
"""

from __future__ import annotations

import bisect
import collections

from . import allowed


def observe_all(histogram, values: list[float]) -> None:
    """``histogram.observe`` of every value, in one write for the sum and one per bucket touched.

    prometheus-client has no call for many observations; its histogram keeps
    the sum and the per-bucket counts in ``_sum`` and ``_buckets``, each bucket
    counting the values up to its bound (the first bound ≥ the value, as ``observe`` picks).
    """
    if len(values) == 1 or not allowed("prometheus_client"):  # then one observe() per value
        for value in values:
            histogram.observe(value)
        return
    histogram._sum.inc(sum(values))
    counts = collections.Counter(bisect.bisect_left(histogram._upper_bounds, value) for value in values)
    for bucket, count in counts.items():
        histogram._buckets[bucket].inc(count)
