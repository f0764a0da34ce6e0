"""The limit: in-process ONNX Runtime throughput and latency, with no server.

Sessions use ONNX Runtime's defaults (spinning threads and all) so the figure
is the best the library does on this machine; every thread count from 1 to the
core count and every power-of-two batch size is tried, and the best kept.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from service.preprocess import decode_image
from service.repository import ModelVersion

from ..digit_images import digit_files

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class RawPoint:
    threads: int
    batch: int
    images_per_s: float
    p50_ms: float  # one call of this batch size


def session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def time_calls(call, seconds: float, min_calls: int = 5) -> list[float]:
    """Durations of repeated calls for about ``seconds`` (after one warm-up call)."""
    call()
    durations: list[float] = []
    stop = time.perf_counter() + seconds
    while len(durations) < min_calls or time.perf_counter() < stop:
        began = time.perf_counter()
        call()
        durations.append(time.perf_counter() - began)
    return durations


def measure_raw(model: ModelVersion, cores: int, seconds: float, batch_sizes=BATCH_SIZES, quiet=False) -> list[RawPoint]:
    points = []
    path = str(model.file_for("fp32")[0])
    for threads in sorted({1, cores}):
        sess = session(path, threads)
        for batch in batch_sizes:
            images = np.random.default_rng(0).random((batch, *model.input_shape), dtype=np.float32)
            durations = time_calls(functools.partial(sess.run, None, {"images": images}), seconds)
            points.append(RawPoint(threads, batch, batch * len(durations) / sum(durations),
                                   float(np.median(durations)) * 1000))
            if not quiet:
                print(f"  raw {model.name}: {threads} thread(s), batch {batch:>2}: "
                      f"{points[-1].images_per_s:8.0f} images/s, {points[-1].p50_ms:7.2f} ms per call", flush=True)
    return points


def best(points: list[RawPoint]) -> RawPoint:
    return max(points, key=lambda p: p.images_per_s)


def batch1(points: list[RawPoint]) -> RawPoint:
    """The fastest single-image call, whatever the thread count."""
    return min((p for p in points if p.batch == 1), key=lambda p: p.p50_ms)


def decode_ms(model: ModelVersion, count: int = 64) -> float:
    """p50 time to decode one of the PNG files the served benchmark sends."""
    channels, height, width = model.input_shape
    files = digit_files(channels, width, count=count, seed=1)
    durations = []
    for f in files * 4:
        began = time.perf_counter()
        decode_image(f.data, channels, height, width, max_pixels=1 << 30)
        durations.append(time.perf_counter() - began)
    return float(np.median(durations)) * 1000
