"""Prometheus metrics, per model and version, correct across worker processes.

``bentoml serve`` runs every worker in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``) and ``/metrics`` merges all of them. prometheus_client picks that mode when it is
first imported, which happens after BentoML has set the directory only if we
import it late: hence the imports inside the constructors.

Per request: outcome, request / queue / preprocessing durations, in-flight.
Per batch: size in images, compute duration. Per worker: model readiness.
"""

from __future__ import annotations

import asyncio
import functools

from .patches.prometheus_histograms import observe_all


@functools.lru_cache(maxsize=4096)
def child(metric, *labels: str):
    """``metric.labels(*labels)``, looked up once: every request touches five of these."""
    return metric.labels(*labels)


class PassTotals:
    """The metric updates of one event-loop pass, written together when it ends.

    In multiprocess mode each ``inc`` or ``observe`` is a locked write to an
    mmap file behind a ``getpid`` call: seven for a LeNet-5 request, 13% of its
    CPU in process. Under load one pass ends many requests (a whole batch is
    answered at once), so the updates of a series are summed and written once:
    a counter or gauge by their total, a histogram by its sum and a count per
    bucket touched. Scrapes see them when the pass ends, before its responses
    leave (cnnserve/serving/patches/uvicorn_writes.py flushes later in the same way).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.increments: dict = {}  # counter or gauge child -> amount
        self.observations: dict = {}  # histogram child -> values
        self.flush_scheduled = False

    def inc(self, metric, amount: float = 1.0) -> None:
        self.increments[metric] = self.increments.get(metric, 0.0) + amount
        self.schedule()

    def observe(self, histogram, value: float) -> None:
        values = self.observations.get(histogram)
        if values is None:
            self.observations[histogram] = [value]
        else:
            values.append(value)
        self.schedule()

    def schedule(self) -> None:
        """A flush at the end of this pass, once."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        increments, observations = self.increments, self.observations
        self.increments, self.observations, self.flush_scheduled = {}, {}, False
        for metric, amount in increments.items():
            if amount:
                metric.inc(amount)
        for histogram, values in observations.items():
            observe_all(histogram, values)



class Immediate:
    """Updates made outside an event loop: written at once."""

    @staticmethod
    def inc(metric, amount: float = 1.0) -> None:
        metric.inc(amount)

    @staticmethod
    def observe(histogram, value: float) -> None:
        histogram.observe(value)


_current: PassTotals | None = None  # the last event loop's; a worker has one loop


def pass_totals() -> PassTotals | Immediate:
    """Where to send a metric update now: the running event loop's ``PassTotals``, or ``Immediate``.

    A ``PassTotals`` is only used from its own loop's thread: another loop gets a new one.
    """
    global _current
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return Immediate
    if _current is None or _current.loop is not loop:
        _current = PassTotals(loop)
    return _current


def flush_pass_totals() -> None:
    """Write the running pass's metric updates now, ahead of a response that leaves early (cnnserve/serving/patches/uvicorn_writes.py)."""
    if _current is not None:
        _current.flush()


LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.012, 0.016, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512)
OUTCOMES = ("success", "client_error", "server_error", "rejected")
MODEL_LABELS = ["model", "version"]


class RequestMetrics:
    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "cnnserve_requests", "Prediction requests by outcome", [*MODEL_LABELS, "protocol", "outcome"]
        )
        self.request_duration = Histogram(
            "cnnserve_request_duration_seconds",
            "Time from a request's arrival to its answer, inside the server, by outcome",
            [*MODEL_LABELS, "protocol", "outcome"],
            buckets=LATENCY_BUCKETS,
        )
        self.queue_duration = Histogram(
            "cnnserve_queue_duration_seconds",
            "Time a request waited in its model's queue before its batch ran",
            MODEL_LABELS,
            buckets=LATENCY_BUCKETS,
        )
        self.request_compute = Counter(
            "cnnserve_request_compute_seconds",
            "ONNX Runtime time of the batch each request ran in, summed over requests (Triton's compute_infer)",
            MODEL_LABELS,
        )
        self.preprocess_duration = Histogram(
            "cnnserve_preprocess_duration_seconds",
            "Image decoding and resizing per request",
            MODEL_LABELS,
            buckets=LATENCY_BUCKETS,
        )
        self.inflight = Gauge(
            "cnnserve_inflight_requests", "Requests being served now", MODEL_LABELS, multiprocess_mode="livesum"
        )


class ModelMetrics:
    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.batch_size = Histogram(
            "cnnserve_batch_size_images", "Images per ONNX Runtime call", MODEL_LABELS, buckets=BATCH_BUCKETS
        )
        self.compute_duration = Histogram(
            "cnnserve_compute_duration_seconds", "ONNX Runtime time per batch", MODEL_LABELS, buckets=LATENCY_BUCKETS
        )
        # Per batch size (Triton's batch statistics): how many batches of each size ran, and their compute time.
        self.batches_by_size = Counter("cnnserve_batches_by_size", "Batches run, by size in images",
                                       [*MODEL_LABELS, "batch_size"])
        self.compute_by_size = Counter("cnnserve_batch_compute_by_size_seconds", "ONNX Runtime time, by batch size",
                                       [*MODEL_LABELS, "batch_size"])
        # Triton's statistics give each model version's last inference; the latest of any worker, live or not.
        self.last_inference = Gauge("cnnserve_last_inference_timestamp_seconds",
                                    "When the model version last computed a batch (Unix time)", MODEL_LABELS,
                                    multiprocess_mode="max")
        self.model_precision = Gauge(
            "cnnserve_model_precision",
            "1 for the precision variant each live inference worker serves the model version with",
            [*MODEL_LABELS, "precision"],
            multiprocess_mode="livemax",
        )
        self.model_degraded = Gauge(
            "cnnserve_model_degraded",
            "1 when the model version serves on another execution provider than the one asked for (see /models)",
            MODEL_LABELS,
            multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "cnnserve_model_ready",
            "1 when the model version is loaded and warmed up in every live inference worker",
            MODEL_LABELS,
            multiprocess_mode="livemin",
        )
