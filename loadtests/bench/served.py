"""One measurement of a running server: a protocol at a concurrency, with the
mean batch the server formed meanwhile (read from its own metrics)."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..digit_images import CONDITIONS_BY_NAME, condition_files, digit_files
from ..local_server import free_port, stop
from ..predict_bench import batch_totals
from .grpc_channel import ONE_CHANNEL, one_channel
from .perf_analyzer import perf_analyzer
from .wrk import HttpLoad, multipart, wrk

PROTOCOLS = ("predict", "v2-http", "grpc")
ROUTES = ("v2-binary", "predict", "noop-v2", "noop")  # the HTTP routes wrk loads (route_loads)


@functools.lru_cache
def predict_load(model: str, channels: int, size: int) -> HttpLoad:
    """``POST /predict`` with 32 different PNG digits at the model's own size (rendered once per model)."""
    bodies, content_type = [], ""
    for f in digit_files(channels, size, count=32, seed=1):
        body, content_type = multipart("image", f.data, "digit.png")
        bodies.append(body)
    return HttpLoad("POST", f"/predict?model={model}", bodies, content_type)


@functools.lru_cache
def small_digit_load(model: str) -> HttpLoad:
    """``POST /predict`` with 32 of the robustness suite's small-digit photos: each one needs the zoom-in pass."""
    bodies, content_type = [], ""
    for f in condition_files(CONDITIONS_BY_NAME["small digit"], count=32):
        body, content_type = multipart("image", f.data, "photo.png")
        bodies.append(body)
    return HttpLoad("POST", f"/predict?model={model}", bodies, content_type)


def v2_binary_body(shape: list[int]) -> tuple[bytes, int]:
    """A V2 REST request with one zero FP32 tensor, outputs asked for in binary (what perf_analyzer sends)."""
    count = math.prod(shape)
    header = json.dumps({
        "inputs": [{"name": "images", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": 4 * count}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return header + bytes(4 * count), len(header)


def v2_binary_load(model, path: str | None = None, images: int = 1) -> HttpLoad:
    """The V2 REST binary request carrying ``images`` zero images, POSTed to ``path`` (the model's infer route)."""
    tensor, header_length = v2_binary_body([images, *model.input_shape])
    return HttpLoad("POST", path or f"/v2/models/{model.name}/infer", [tensor],
                    headers={"Inference-Header-Content-Length": str(header_length)})


def route_loads(model) -> dict[str, HttpLoad]:
    """What wrk sends to each prediction route: V2 REST with a binary tensor, ``/predict`` with PNG files, and
    the same V2 request to the two no-op routes (noop_routes.py): the V2 route without inference, and a bare
    POST that only reads the body."""
    return {
        "v2-binary": v2_binary_load(model),
        "predict": predict_load(model.name, model.input_shape[0], model.input_shape[-1]),
        "noop-v2": v2_binary_load(model, f"/noop/v2/models/{model.name}/infer"),
        "noop": v2_binary_load(model, "/noop"),
    }


def measure(server, model: str, shape: list[int], protocol: str, concurrency: int, seconds: float) -> dict:
    """``protocol``: ``predict`` (PNG files, wrk), ``v2-http`` (binary tensors) or ``grpc`` (perf_analyzer), or
    ``ONE_CHANNEL`` (every call on one gRPC channel)."""
    before = batch_totals(httpx.get(f"{server.url}/metrics", timeout=30).text, model)
    if protocol == "predict":
        row = wrk(server.url, predict_load(model, shape[1], shape[-1]), concurrency, seconds)
    elif protocol == ONE_CHANNEL:
        row = one_channel(model, server.grpc_address, shape, concurrency, seconds)
    else:
        address = server.grpc_address if protocol == "grpc" else server.url.removeprefix("http://")
        row = perf_analyzer(model, address, "grpc" if protocol == "grpc" else "http", concurrency, seconds)
    after = batch_totals(httpx.get(f"{server.url}/metrics", timeout=30).text, model)
    images, batches = after[0] - before[0], after[1] - before[1]
    return {**row, "mean_batch": images / batches if batches else None}


@contextlib.contextmanager
def running_baseline(model_file: Path, workers: int, threads: int, log_dir: Path):
    """The hand-written FastAPI server (baseline_fastapi.py) on 127.0.0.1 for one model; yields its URL."""
    port = free_port()
    env = {**os.environ, "CNNSERVE_BASELINE_MODEL": str(model_file), "CNNSERVE_BASELINE_THREADS": str(threads)}
    command = [
        sys.executable, "-m", "uvicorn", "loadtests.bench.baseline_fastapi:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--no-access-log",
    ]
    with (log_dir / f"baseline-{port}.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the FastAPI baseline did not start; see {log.name}")
            time.sleep(0.25)
        yield url
    finally:
        stop(process)


def baseline_measure(url: str, model: str, concurrency: int, seconds: float) -> dict:
    return {**perf_analyzer(model, url.removeprefix("http://"), "http", concurrency, seconds), "mean_batch": 1.0}
