"""The BentoML services: a gateway in front, a batching inference runtime behind.

``Gateway`` decodes images, speaks the protocols (the HTTP routes of
``service/rest.py`` mounted in it, and gRPC) and hands tensors to the inference
core.
``InferenceRuntime`` holds the ONNX Runtime sessions and exposes one batchable
API per model version, so requests from every client and every protocol for
the same model ride in one ONNX Runtime call. The gateway reaches it through
``bentoml.depends``; preprocessing on CPU scales apart from inference.

Start it with ``bentoml serve service.app:Gateway``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort
from bentoml.exceptions import BentoMLException, ServiceUnavailable

from .config import load_settings
from .core import InferenceCore, pack_outputs
from .errors import InternalError, ModelUnavailable, Overloaded
from .limits import BodyLimit
from .metrics import RuntimeMetrics
from .repository import ModelVersion, discover
from .rest import build_rest_app
from .v2.dataplane import DataPlane
from .runtime import ModelInvalid, choose_providers, cuda_device_count, load_model, tensorrt_loads

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
repository = discover(settings.models_dir, settings.serve)
STATUS_TTL_SECONDS = 2.0


def api_name(model: ModelVersion) -> str:
    return "infer_" + re.sub(r"\W", "_", model.name) + f"_v{model.version}"


def runtime_api(model: ModelVersion):
    """One inference API per model version (batchable unless batching is off)."""
    key = model.key

    def infer(self, images: np.ndarray) -> np.ndarray:
        return self.run_batch(key, images)

    infer.__name__ = api_name(model)
    if not settings.batching:
        return bentoml.api(name=infer.__name__)(infer)
    batching = settings.batching_for(model.name)
    return bentoml.api(
        name=infer.__name__,
        batchable=True,
        max_batch_size=batching.max_batch_size,
        max_latency_ms=batching.max_latency_ms,
    )(infer)


class InferenceRuntime:
    """Loads, verifies and warms every model version, then runs batches."""

    def __init__(self):
        self.metrics = RuntimeMetrics()
        self.threads = settings.session_threads()
        self.providers = choose_providers(
            settings.providers, ort.get_available_providers(), cuda_device_count(), tensorrt_loads()
        )
        cache_dir = Path(tempfile.gettempdir()) / "cnnserve-trt-cache"
        self.loaded = {}
        self.failures: dict[str, str] = {}
        for model in repository.versions():
            labels = (model.name, str(model.version))
            try:
                loaded = load_model(model, self.providers, settings.precision, self.threads, cache_dir)
                warm_seconds = loaded.warm_up(settings.batching_for(model.name).max_batch_size) if settings.warmup else 0
            except (ModelInvalid, ValueError) as exc:
                self.failures[model.key] = str(exc)
                self.metrics.model_ready.labels(*labels).set(0)
                log.error("model %s refused: %s", model.key, exc)
                continue
            self.loaded[model.key] = loaded
            self.metrics.model_ready.labels(*labels).set(1)
            log.info(
                "model %s ready on %s (%s, %d thread(s), warm-up %.2f s)",
                model.key, loaded.providers[0], loaded.variant, self.threads, warm_seconds,
            )

    def run_batch(self, key: str, images: np.ndarray) -> np.ndarray:
        loaded = self.loaded.get(key)
        if loaded is None:
            raise ModelUnavailable(f"model {key} is not loaded: {self.failures.get(key, 'unknown model')}")
        started = time.perf_counter()
        probabilities, boxes = loaded.run(np.ascontiguousarray(images, dtype=np.float32))
        seconds = time.perf_counter() - started
        labels = (loaded.model.name, str(loaded.model.version))
        self.metrics.batch_size.labels(*labels).observe(len(images))
        self.metrics.compute_duration.labels(*labels).observe(seconds)
        return pack_outputs(probabilities, boxes, seconds * 1000)

    @bentoml.api
    def status(self) -> dict:
        """Per model version: ready or failed (with the reason), provider and precision."""
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


for _model in repository.versions():
    setattr(InferenceRuntime, api_name(_model), runtime_api(_model))

# BentoML's client recycles its connection pool to a dependency every
# `max_requests` calls by closing it, which drops the calls still in flight on
# it ("Server disconnected", a 500 to the client): never recycle.
NEVER_RECYCLE = {"max_requests": 2**31 - 1, "max_age": 10.0**9}

InferenceRuntime = bentoml.service(
    name="cnnserve-runtime",
    workers=settings.inference_workers(),
    threads=1,
    traffic={"timeout": 60},
    runner_connection=NEVER_RECYCLE,
    logging={"access": {"enabled": settings.access_log}},
)(InferenceRuntime)

rest_app = build_rest_app()


@bentoml.asgi_app(rest_app, path="/")
@bentoml.service(
    name="cnnserve",
    workers=settings.gateway_workers,
    traffic={"timeout": 60},
    logging={"access": {"enabled": settings.access_log}},
)
class Gateway:
    runtime = bentoml.depends(InferenceRuntime)

    def __init__(self):
        self._status: dict = {}
        self._status_at = 0.0
        self._status_lock = asyncio.Lock()
        self.core = InferenceCore(settings, repository, self.infer, self.runtime_status)
        rest_app.state.core = self.core
        rest_app.state.dataplane = DataPlane(self.core)

    async def infer(self, model: ModelVersion, images: np.ndarray) -> np.ndarray:
        try:
            return await getattr(self.runtime.to_async, api_name(model))(images)
        except ServiceUnavailable:
            raise Overloaded(
                f"model {model.key} is at capacity: the queue cannot meet its "
                f"{settings.batching_for(model.name).max_latency_ms} ms latency budget; retry shortly"
            ) from None
        except BentoMLException as exc:
            log.error("inference for %s failed: %s", model.key, exc)
            raise InternalError(f"inference for {model.key} failed; see the server log") from None

    async def runtime_status(self) -> dict:
        """The runtime's per-model status, cached briefly once every model has reported."""
        if self._status and time.monotonic() - self._status_at < STATUS_TTL_SECONDS:
            return self._status
        async with self._status_lock:
            if not self._status or time.monotonic() - self._status_at >= STATUS_TTL_SECONDS:
                self._status = await self.runtime.to_async.status()
                self._status_at = time.monotonic()
        return self._status

    async def __is_ready__(self) -> bool:
        try:
            statuses = await self.runtime_status()
        except Exception:  # noqa: BLE001  (not ready while the runtime cannot answer)
            return False
        return all(key in statuses for key in (m.key for m in repository.versions()))


Gateway.add_asgi_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
