"""The BentoML service: every worker process is a complete cnnserve.

Each worker loads and warms the ONNX Runtime sessions, runs one adaptive
batcher per model version (``cnnserve/serving/batcher.py``), serves the HTTP routes of
``cnnserve/serving/rest.py`` (mounted in the service) and a gRPC server on the same
event loop, so requests from every protocol for one model share its batches.
BentoML runs the workers (``workers × threads ≤ cores`` by default), restarts
one that dies, merges their metrics at ``/metrics`` and answers ``/livez`` and
``/readyz``. Why not BentoML's own batchable API behind ``bentoml.depends``:
see docs/architecture.md (measured: a 5 ms hop per request and small batches).

Start it with ``bentoml serve cnnserve.serving.app:CnnServe``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort

from . import patching
from .auth import ApiKeyMiddleware, KeyCheck, load_digests
from .batcher import AdaptiveBatcher, BatchResult, inline_up_to
from .config import load_settings
from .core import InferenceCore
from .cores import SOLO_MAX_BATCH, CoreTokens, ModelRunner
from .errors import ModelUnavailable
from .fastlane import FastLane
from .limits import BodyLimit
from .listening import listen_on_own_socket, spread_connections
from .lone import lone_http_request
from .metrics import ModelMetrics, child, pass_totals
from .noop import zero_compute
from .repository import ModelVersion, discover
from .rest import build_rest_app
from .runtime import (
    CPU,
    LoadedModel,
    ModelInvalid,
    choose_providers,
    cuda_device_count,
    load_model,
    tensorrt_loads,
)
from .v2.dataplane import DataPlane
from .writes import coalesce_responses

log = logging.getLogger("cnnserve")


def configure_logging() -> None:
    """Our INFO lines (chosen provider, warm-up, refused models) beside BentoML's."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] [%(name)s:%(process)d] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


configure_logging()
settings = load_settings()
if settings.spread_connections and patching.allowed("circus") and patching.allowed("bentoml"):
    spread_connections()  # takes effect in the arbiter, which imports this before it binds the HTTP port
repository = discover(settings.models_dir, settings.serve)
rest_app = build_rest_app()


class ModelHost:
    """The models of one worker: loaded, verified, warmed, each behind its batcher."""

    def __init__(self):
        self.metrics = ModelMetrics()
        self.threads = settings.session_threads()
        self.providers = choose_providers(
            settings.providers, ort.get_available_providers(), cuda_device_count(), tensorrt_loads()
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        self.cores = os.cpu_count() or 1
        self.tokens = (
            CoreTokens(self.cores, self.threads, (bentoml.server_context.worker_index or 1) - 1)
            if settings.borrow_idle_cores and self.threads < self.cores and self.providers[0] == CPU
            else None
        )
        self.loaded: dict[str, LoadedModel] = {}
        self.batchers: dict[str, AdaptiveBatcher] = {}
        self.failures: dict[str, str] = {}
        cache_dir = Path(tempfile.gettempdir()) / "cnnserve-trt-cache"
        for model in repository.versions():
            self.load(model, cache_dir)
        self.status = self.describe()

    def load(self, model: ModelVersion, cache_dir: Path) -> None:
        labels = (model.name, str(model.version))
        batching = settings.batching_for(model.name)
        try:
            loaded = load_model(model, self.providers, settings.precision, self.threads, cache_dir)
            warm_up = loaded.warm_up(batching.max_batch_size) if settings.warmup else {}
            runner = self.runner(loaded, warm_up, cache_dir)
        except (ModelInvalid, ValueError) as exc:
            self.failures[model.key] = str(exc)
            self.metrics.model_ready.labels(*labels).set(0)
            log.error("model %s refused: %s", model.key, exc)
            return
        self.loaded[model.key] = loaded
        self.metrics.model_ready.labels(*labels).set(1)

        def observe(images: int, seconds: float) -> None:
            totals = pass_totals()
            totals.observe(child(self.metrics.batch_size, *labels), images)
            totals.observe(child(self.metrics.compute_duration, *labels), seconds)

        self.batchers[model.key] = AdaptiveBatcher(
            model.key,
            runner,
            self.executor,
            max_batch_size=batching.max_batch_size if settings.batching else 1,
            max_queue_delay_ms=batching.max_queue_delay_ms,
            max_queue_images=batching.max_queue_images,
            on_batch=observe,
            inline_up_to=runner.inline_up_to,
            run_now=runner.run_if_cores_free if runner.solo else None,
            alone=lone_http_request,
        )
        log.info(
            "model %s ready on %s (%s, %d thread(s); warm-up: batch 1 %.2f ms, batch %d %.2f ms; "
            "batches up to %d run on the event loop, up to %d on every core when the others are idle)",
            model.key, loaded.providers[0], loaded.variant, self.threads, 1000 * warm_up.get(1, 0),
            batching.max_batch_size, 1000 * warm_up.get(batching.max_batch_size, 0), runner.inline_up_to,
            SOLO_MAX_BATCH if runner.solo else 0,
        )

    def runner(self, loaded: LoadedModel, warm_up: dict[int, float], cache_dir: Path) -> ModelRunner:
        """How this model's batches run. With idle cores to borrow, a model too large to run on the
        event loop gets a second session with a thread per core, for batches of up to SOLO_MAX_BATCH
        (core tokens: cnnserve/serving/cores.py). Warm-up timings cannot choose the sizes: every worker
        warms up at once, so a session with a thread per core looks slower then than it is."""
        inline = inline_up_to(warm_up)
        if self.tokens is None or inline >= SOLO_MAX_BATCH:
            return ModelRunner(loaded, inline)
        solo = load_model(loaded.model, self.providers, settings.precision, self.cores, cache_dir, spin=True)
        if settings.warmup:
            solo.warm_up(SOLO_MAX_BATCH)
        return ModelRunner(loaded, inline, self.tokens, solo)

    def batcher(self, model: ModelVersion) -> AdaptiveBatcher:
        batcher = self.batchers.get(model.key)
        if batcher is None:
            raise ModelUnavailable(f"model {model.key} is not loaded: {self.failures.get(model.key, 'unknown')}")
        return batcher

    async def infer(self, model: ModelVersion, images: np.ndarray, deadline: float) -> BatchResult:
        return await self.batcher(model).submit(images, deadline)

    def check_room(self, model: ModelVersion, count: int) -> None:
        self.batcher(model).check_room(count)

    def describe(self) -> dict:
        """Per model version: ready or failed (with the reason), provider and precision.

        Fixed once loading is over, so it is built once and then only read.
        """
        statuses = {key: {"status": "failed", "reason": reason} for key, reason in self.failures.items()}
        for key, loaded in self.loaded.items():
            statuses[key] = {
                "status": "ready",
                "reason": None,
                "provider": loaded.providers[0],
                "providers": loaded.providers,
                "variant": loaded.variant,
                "threads": self.threads,
                "pid": os.getpid(),
            }
        return statuses


@bentoml.asgi_app(rest_app, path="/")
@bentoml.service(
    name="cnnserve",
    workers=settings.inference_workers(),
    traffic={"timeout": 60},
    logging={"access": {"enabled": settings.access_log}},
)
class CnnServe:
    def __init__(self):
        self.host = ModelHost()
        self.core = InferenceCore(settings, repository, self.host.infer, self.runtime_status, self.host.check_room)
        rest_app.state.core = self.core
        rest_app.state.dataplane = DataPlane(self.core)
        rest_app.state.noop_dataplane = DataPlane(self.core, compute=zero_compute)

    def runtime_status(self) -> dict:
        return self.host.status

    def __is_ready__(self) -> bool:
        """Ready once every model version has been loaded and warmed up, or refused with a reason."""
        return all(model.key in self.host.status for model in repository.versions())


key_check = KeyCheck(load_digests(settings))
CnnServe.add_asgi_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
CnnServe.add_asgi_middleware(ApiKeyMiddleware, check=key_check, open_paths=settings.auth_open_paths)
bentoml_to_asgi = type(CnnServe).to_asgi


def to_asgi_with_fast_lane(service, is_main: bool = True):
    """What each worker's uvicorn serves: BentoML's app, with the fast lane in front (cnnserve/serving/fastlane.py),
    on the worker's own listening socket (cnnserve/serving/listening.py), each response in one write (cnnserve/serving/writes.py).

    BentoML builds the app by calling ``to_asgi`` on the service class, so the
    fast lane goes in there; services other than this one are left alone.
    """
    app = bentoml_to_asgi(service, is_main)
    if service is not CnnServe:
        return app
    if settings.spread_connections:
        listen_on_own_socket()
    if settings.coalesce_writes:
        coalesce_responses()
    else:
        log.info("coalesce_writes is off: lone requests queue like the rest (lone.py reads uvicorn's request "
                 "tasks through the coalescing protocol)")
    if not settings.fast_lane:
        return app
    return FastLane(app, rest_app, settings.max_body_bytes, key_check, settings.auth_open_paths, settings.noop_route,
                    cors=bentoml_cors_options())


def bentoml_cors_options() -> dict | None:
    """BentoML's CORS settings (``services.cnnserve.http.cors`` or ``api_server.http.cors``) as Starlette's
    ``CORSMiddleware`` takes them, or None when CORS is off: the fast lane applies them as BentoML does.

    Read from BentoML's configuration container, the same values its own app reads (patching.py).
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    if not BentoMLContainer.http.cors.enabled.get():
        return None
    return BentoMLContainer.access_control_options.get()


if patching.allowed("bentoml"):
    type(CnnServe).to_asgi = to_asgi_with_fast_lane
