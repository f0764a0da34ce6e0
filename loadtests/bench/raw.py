"""The limit: in-process ONNX Runtime throughput and latency, with no server.

Sessions are the server's (session_options) with ONNX Runtime's default of
spinning threads, so the figure is the best the library does on this machine
with the file the server runs; one thread and a thread per core,
and every power-of-two batch size are tried, and the best kept. So are
single-threaded runs on every core at once (one session called from a thread
per core), which is how a server with a worker per core computes under load:
ResNet-18 INT8 at batch 16 on 2 cores, 676-763 images/s against 624-652 for
one run on two threads (2026-11-26), so a best that left them out would flatter
every "÷ raw" ratio.
``decode_then_run`` is the one-client baseline: what a script without a server
pays per image.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from cnnserve.contract.images import decode_image
from cnnserve.serving.repository import ModelVersion
from cnnserve.serving.runtime import session_options

from ..digit_images import digit_files

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class RawPoint:
    threads: int
    batch: int
    images_per_s: float
    p50_ms: float  # one call of this batch size
    runs: int = 1  # calls in flight at once on the session, each from its own thread


CPU = "CPUExecutionProvider"


@functools.cache  # the target rounds measure the same sessions again
def session(path: str, threads: int, provider: str = CPU) -> ort.InferenceSession:
    """The server's session options (an INT8 file runs as fast as the server runs it), with ONNX Runtime's
    default of spinning threads."""
    options = session_options(threads, spin=True)
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
                  provider: str = CPU, runs: int = 1) -> RawPoint:
    """One thread count and batch size of one precision variant, called back to back for about ``seconds`` by
    each of ``runs`` threads at once."""
    sess = session(str(model.file_for(variant)[0]), threads, provider)
    images = np.random.default_rng(0).random((batch, *model.input_shape), dtype=np.float32)
    call = functools.partial(sess.run, None, {"images": images})
    if runs == 1:
        durations = time_calls(call, seconds)
        return RawPoint(threads, batch, batch * len(durations) / sum(durations), float(np.median(durations)) * 1000)
    began = time.perf_counter()  # each thread warms up first (time_calls): one uncounted call in the window
    with concurrent.futures.ThreadPoolExecutor(runs) as pool:  # ONNX Runtime releases the GIL while it computes
        per_thread = list(pool.map(lambda _: time_calls(call, seconds, min_calls=2), range(runs)))
    elapsed = time.perf_counter() - began
    durations = [d for thread in per_thread for d in thread]
    return RawPoint(threads, batch, batch * len(durations) / elapsed, float(np.median(durations)) * 1000, runs)


def measure_raw(model: ModelVersion, cores: int, seconds: float, variant: str = "fp32",
                provider: str = CPU) -> list[RawPoint]:
    points = []
    every_core_alone = [(1, cores)] if cores > 1 and provider == CPU else []
    for threads, runs in [(threads, 1) for threads in sorted({1, cores})] + every_core_alone:
        for batch in BATCH_SIZES:
            points.append(measure_point(model, threads, batch, seconds, variant, provider, runs))
            print(f"  raw {model.name} {variant}: {describe_threads(points[-1])}, batch {batch:>2}: "
                  f"{points[-1].images_per_s:8.0f} images/s, {points[-1].p50_ms:7.2f} ms per call", flush=True)
    return points


def describe_threads(point: RawPoint | dict) -> str:
    """"2 thr", or "2 runs × 1 thr" for calls at once."""
    point = point if isinstance(point, dict) else vars(point)
    runs = point.get("runs", 1)
    return f"{point['threads']} thr" if runs == 1 else f"{runs} runs × {point['threads']} thr"


def best(points: list[RawPoint]) -> RawPoint:
    return max(points, key=lambda p: p.images_per_s)


def batch1(points: list[RawPoint]) -> RawPoint:
    """The fastest single-image call, whatever the thread count (one call at a time)."""
    return min((p for p in points if p.batch == 1 and p.runs == 1), key=lambda p: p.p50_ms)


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


def decode_then_run(model: ModelVersion, cores: int, seconds: float, provider: str = CPU,
                    variant: str = "fp32") -> RawPoint:
    """Decode one PNG, then run it alone with ``variant``'s file, image after image, in process (best thread count).

    This is what a script without a server pays per image, and the baseline of
    the one-client target (with the variant the server serves). Each step finds the caches full of the other's data,
    so it costs more than the two back-to-back medians added (ResNet-18 here:
    4.19-4.36 ms against 3.76-4.04; docs/architecture.md).
    """
    files = png_files(model, 32)
    path = str(model.file_for(variant)[0])
    points = []
    for threads in sorted({1, cores}):
        one_image = functools.partial(decode_and_run, model, session(path, threads, provider), itertools.cycle(files))
        durations = time_calls(one_image, seconds)
        points.append(RawPoint(threads, 1, len(durations) / sum(durations), float(np.median(durations)) * 1000))
    return min(points, key=lambda p: p.p50_ms)


def decode_and_run(model: ModelVersion, sess: ort.InferenceSession, files: Iterator[bytes]) -> None:
    images, _ = decode_image(next(files), *model.input_shape, max_pixels=1 << 30)
    sess.run(None, {"images": images[None]})
