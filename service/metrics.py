"""Prometheus metrics, per model and version, correct across worker processes.

``bentoml serve`` runs every worker in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``) and ``/metrics`` merges all of them. prometheus_client picks that mode when it is
first imported, which happens after BentoML has set the directory only if we
import it late: hence the imports inside the constructors.

Per request: outcome, request / queue / preprocessing durations, in-flight.
Per batch: size in images, compute duration. Per worker: model readiness.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=4096)
def child(metric, *labels: str):
    """``metric.labels(*labels)``, looked up once: every request touches five of these."""
    return metric.labels(*labels)


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
        from prometheus_client import Gauge, Histogram

        self.batch_size = Histogram(
            "cnnserve_batch_size_images", "Images per ONNX Runtime call", MODEL_LABELS, buckets=BATCH_BUCKETS
        )
        self.compute_duration = Histogram(
            "cnnserve_compute_duration_seconds", "ONNX Runtime time per batch", MODEL_LABELS, buckets=LATENCY_BUCKETS
        )
        self.model_ready = Gauge(
            "cnnserve_model_ready",
            "1 when the model version is loaded and warmed up in every live inference worker",
            MODEL_LABELS,
            multiprocess_mode="livemin",
        )
