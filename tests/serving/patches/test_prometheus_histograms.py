"""Many observations go into a prometheus-client histogram in one write for the sum and one per bucket,
reading exactly as if each had been observed on its own."""

import pytest
from prometheus_client import CollectorRegistry, Histogram

from cnnserve.serving.metrics import LATENCY_BUCKETS
from cnnserve.serving.patches.prometheus_histograms import observe_all
from tests.serving.helpers import samples

DURATIONS = [0.0003, 0.0005, 0.0007, 0.003, 0.003, 0.02, 7.0, 12.0, 0.0011]


def histogram() -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    return Histogram("duration_seconds", "", buckets=LATENCY_BUCKETS, registry=registry), registry


def test_many_observations_read_as_if_observed_one_by_one():
    one_by_one, one_by_one_registry = histogram()
    for seconds in DURATIONS:
        one_by_one.observe(seconds)
    together, together_registry = histogram()
    observe_all(together, DURATIONS)
    assert samples(together_registry) == pytest.approx(samples(one_by_one_registry))


def test_the_sum_takes_one_write_for_all_of_them(monkeypatch):
    """Fails if the patch stops taking effect (observe_all falling back to one observe per value)."""
    together, _ = histogram()
    writes = []
    original = together._sum.inc
    monkeypatch.setattr(together._sum, "inc", lambda amount: (writes.append(amount), original(amount)))
    observe_all(together, DURATIONS)
    assert writes == [pytest.approx(sum(DURATIONS))]
