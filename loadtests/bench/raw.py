"""The limit: in-process ONNX Runtime throughput and latency, with no server.

Sessions use ONNX Runtime's defaults (spinning threads and all) so the figure
is the best the library does on this machine; every thread count from 1 to the
core count and every power-of-two batch size is tried, and the best kept.
``decode_then_run`` is the one-client baseline: what a script without a server
pays per image.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from cnnserve.contract.images import decode_image
from cnnserve.serving.repository import ModelVersion

from ..digit_images import digit_files

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class RawPoint:
    threads: int
    batch: int
    images_per_s: float
    p50_ms: float  # one call of this batch size


CPU = "CPUExecutionProvider"


@functools.cache  # the target rounds measure the same sessions again
def session(path: str, threads: int, provider: str = CPU) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=[provider] if provider == CPU else [provider, CPU])


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


def measure_point(model: ModelVersion, threads: int, batch: int, seconds: float, variant: str = "fp32",
                  provider: str = CPU) -> RawPoint:
    """One thread count and batch size of one precision variant, called back to back for about ``seconds``."""
    sess = session(str(model.file_for(variant)[0]), threads, provider)
    images = np.random.default_rng(0).random((batch, *model.input_shape), dtype=np.float32)
    durations = time_calls(functools.partial(sess.run, None, {"images": images}), seconds)
    return RawPoint(threads, batch, batch * len(durations) / sum(durations), float(np.median(durations)) * 1000)


def measure_raw(model: ModelVersion, cores: int, seconds: float, variant: str = "fp32",
                provider: str = CPU) -> list[RawPoint]:
    points = []
    for threads in sorted({1, cores}):
        for batch in BATCH_SIZES:
            points.append(measure_point(model, threads, batch, seconds, variant, provider))
            print(f"  raw {model.name} {variant}: {threads} thread(s), batch {batch:>2}: "
                  f"{points[-1].images_per_s:8.0f} images/s, {points[-1].p50_ms:7.2f} ms per call", flush=True)
    return points


def best(points: list[RawPoint]) -> RawPoint:
    return max(points, key=lambda p: p.images_per_s)


def batch1(points: list[RawPoint]) -> RawPoint:
    """The fastest single-image call, whatever the thread count."""
    return min((p for p in points if p.batch == 1), key=lambda p: p.p50_ms)


def png_files(model: ModelVersion, count: int) -> list[bytes]:
    """PNG digits at the model's size: the files the served benchmark sends."""
    channels, _, width = model.input_shape
    return [f.data for f in digit_files(channels, width, count=count, seed=1)]


def decode_ms(model: ModelVersion, count: int = 64) -> float:
    """p50 time to decode one of the PNG files the served benchmark sends, back to back."""
    durations = []
    for data in png_files(model, count) * 4:
        began = time.perf_counter()
        decode_image(data, *model.input_shape, max_pixels=1 << 30)
        durations.append(time.perf_counter() - began)
    return float(np.median(durations)) * 1000


def decode_then_run(model: ModelVersion, cores: int, seconds: float, provider: str = CPU) -> RawPoint:
    """Decode one PNG, then run it alone, image after image, in process (best thread count).

    This is what a script without a server pays per image, and the baseline of
    the one-client target. Each step finds the caches full of the other's data,
    so it costs more than the two back-to-back medians added (ResNet-18 here:
    4.19-4.36 ms against 3.76-4.04; docs/architecture.md).
    """
    files = png_files(model, 32)
    path = str(model.file_for("fp32")[0])
    points = []
    for threads in sorted({1, cores}):
        one_image = functools.partial(decode_and_run, model, session(path, threads, provider), itertools.cycle(files))
        durations = time_calls(one_image, seconds)
        points.append(RawPoint(threads, 1, len(durations) / sum(durations), float(np.median(durations)) * 1000))
    return min(points, key=lambda p: p.p50_ms)


def decode_and_run(model: ModelVersion, sess: ort.InferenceSession, files: Iterator[bytes]) -> None:
    images, _ = decode_image(next(files), *model.input_shape, max_pixels=1 << 30)
    sess.run(None, {"images": images[None]})
