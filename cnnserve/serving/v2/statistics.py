"""Triton's statistics extension: cumulative counts and durations per model version since the server started.

Built from the Prometheus metrics the workers already keep (prometheus_client's multiprocess files, the ones
``/metrics`` merges), so whichever worker answers speaks for all of them and nothing is counted twice. The fields
follow Triton's: ``success`` and ``fail`` (requests and their time inside the server), ``queue`` (time waiting
for a batch), ``compute_input`` (decoding images or reading tensors), ``compute_infer`` (the compute of the batch
each request ran in, as Triton counts it), ``inference_count`` (images) and ``execution_count`` (batches).
``batch_stats`` comes from a counter of batches and their compute time per batch size. cnnserve does not time
output encoding apart (``compute_output`` is zero), nor a batch's input copy (``compute_input`` there is zero), and
keeps no last-inference time. The
three compute figures share one count, the requests that ran (perf_analyzer refuses statistics where they differ);
``compute_input`` holds the decoding time of the requests that had any (tensors need none).
"""

from __future__ import annotations

import os
from collections import defaultdict

from ..repository import Repository

NS = 1e9
SUCCESS = "success"


def metric_totals() -> dict[tuple[str, str, str, str], float]:
    """Every cnnserve sample summed by (sample name, model, version, outcome) over its other labels (protocol)."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    totals: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for family in registry.collect():
        if not family.name.startswith("cnnserve_"):
            continue
        for sample in family.samples:
            if "model" in sample.labels:
                labels = sample.labels
                kind = labels.get("outcome", labels.get("batch_size", ""))
                totals[sample.name, labels["model"], labels.get("version", ""), kind] += sample.value
    return totals


def duration(count: float, seconds: float) -> dict:
    return {"count": int(count), "ns": int(seconds * NS)}


def version_statistics(totals: dict, name: str, version: str) -> dict:
    def total(sample: str, outcome: str | None = "") -> float:
        if outcome is None:  # every outcome but success
            return sum(v for (s, m, ver, o), v in totals.items() if (s, m, ver) == (sample, name, version) and o != SUCCESS)
        return totals.get((sample, name, version, outcome), 0.0)

    requests, request_seconds = "cnnserve_requests_total", "cnnserve_request_duration_seconds"
    ran = total("cnnserve_queue_duration_seconds_count")  # requests that reached a batch
    return {
        "name": name,
        "version": version,
        "last_inference": int(total("cnnserve_last_inference_timestamp_seconds") * 1000),  # ms since the epoch
        "inference_count": int(total("cnnserve_batch_size_images_sum")),
        "execution_count": int(total("cnnserve_batch_size_images_count")),
        "inference_stats": {
            "success": duration(total(requests, SUCCESS), total(f"{request_seconds}_sum", SUCCESS)),
            "fail": duration(total(requests, None), total(f"{request_seconds}_sum", None)),
            "queue": duration(ran, total("cnnserve_queue_duration_seconds_sum")),
            "compute_input": duration(ran, total("cnnserve_preprocess_duration_seconds_sum")),
            "compute_infer": duration(ran, total("cnnserve_request_compute_seconds_total")),
            "compute_output": duration(ran, 0.0),
        },
        "batch_stats": [
            {"batch_size": int(size), "compute_input": duration(batches, 0.0),
             "compute_infer": duration(batches, total("cnnserve_batch_compute_by_size_seconds_total", size)),
             "compute_output": duration(batches, 0.0)}
            for size, batches in sorted(batch_sizes(totals, name, version).items(), key=lambda item: int(item[0]))
        ],
    }


def batch_sizes(totals: dict, name: str, version: str) -> dict[str, float]:
    """Batches run per batch size (the size as its label text), for one model version."""
    return {size: count for (sample, model, ver, size), count in totals.items()
            if (sample, model, ver) == ("cnnserve_batches_by_size_total", name, version) and count}


def model_statistics(repository: Repository, name: str | None = None, version: int | None = None) -> dict:
    """``{"model_stats": [...]}`` for every served version, one model's, or one version (``resolve`` raises for
    an unknown one)."""
    if name is None:
        versions = repository.versions()
    elif version is None:
        repository.resolve(name)
        versions = list(repository.models[name].values())
    else:
        versions = [repository.resolve(name, version)]
    totals = metric_totals()
    return {"model_stats": [version_statistics(totals, v.name, str(v.version)) for v in versions]}
