"""The models of one worker process: loaded, verified, warmed, each behind its batcher.

Built from the settings and the repository alone, so the service (app.py) and
the benchmark's in-process mode (loadtests/bench/inproc.py) build the same
thing. The inference core reaches it only through ``core.Host``: ``infer``,
``check_room``, ``status`` and ``workers``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import onnxruntime as ort

from ..machine import available_cores
from .batcher import AdaptiveBatcher, BatchResult, full_batch_estimate, inline_up_to
from .config import Settings
from .control import server_folder
from .errors import ModelUnavailable
from .lone_request import lone_http_request
from .metrics import ModelMetrics, child, pass_totals
from .precision import CANDIDATES, PrecisionChoice, accuracy_shortfall, choose
from .repository import ModelVersion, Repository
from .runner import SOLO_MAX_BATCH, CoreTokens, ModelRunner
from .runtime import (
    CPU,
    GPU_PROVIDERS,
    TENSORRT,
    LoadedModel,
    ModelFileInvalid,
    ModelInvalid,
    batch_shapes,
    choose_providers,
    cuda_context_lost,
    cuda_device_count,
    load_model,
    preload_gpu_libraries,
    tensorrt_loads,
)
from .shutdown import stop_this_worker

log = logging.getLogger("cnnserve")
T = TypeVar("T")


class ModelHost:
    """The models of one worker: loaded, verified, warmed, each behind its batcher."""

    def __init__(self, settings: Settings, repository: Repository, worker_index: int = 0):
        """``worker_index``: this worker's place among the server's (0 to workers - 1), which spreads the
        workers' borrowed cores (runner.py)."""
        self.settings = settings
        self.worker_index = worker_index
        self.metrics = ModelMetrics()
        available = ort.get_available_providers()
        preload_gpu_libraries(available)
        self.providers = choose_providers(settings.providers, available, cuda_device_count(), tensorrt_loads())
        if settings.precision == "int8" and TENSORRT in self.providers:  # TensorRT cannot build the INT8 files
            log.info("precision int8: the models run on %s, not TensorRT", self.providers[1])
            self.providers.remove(TENSORRT)
        gpus = cuda_device_count() if self.providers[0] in GPU_PROVIDERS else 0
        self.device_id = worker_index % gpus if gpus else 0  # worker i on GPU i mod GPUs
        self.workers = settings.inference_workers(gpus=gpus)  # this worker's server has as many as app.py starts
        self.threads = settings.session_threads(gpus=gpus)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        self.cores = available_cores()
        self.tokens = (
            CoreTokens(self.cores, self.threads, worker_index, self.workers,
                       server_folder(settings.models_dir) / "cores.lock")
            if settings.borrow_idle_cores and self.threads < self.cores and self.providers[0] == CPU
            else None
        )
        self.loaded: dict[str, LoadedModel] = {}
        self.batchers: dict[str, AdaptiveBatcher] = {}
        self.failures: dict[str, str] = {}
        self.precision_choices: dict[str, PrecisionChoice] = {}  # per version key, where chosen by measurement
        self.device_lost_because: str | None = None  # the error that lost this worker's GPU (lose_device)
        self.degraded: dict[str, str] = {}  # per version key: why it serves on another provider than asked
        for model in repository.versions():
            self.load(model)
        self.status = self.describe()

    def load(self, model: ModelVersion) -> bool:
        """Load, check and warm ``model`` and put it behind its batcher; False (and the reason recorded) if refused."""
        return self.install(model, self.prepare(model))

    def prepare(self, model: ModelVersion) -> tuple[LoadedModel, dict[int, float], ModelRunner] | str:
        """The model's session, warm-up timings and runner, or why it is refused. Touches nothing requests read,
        so it can run in a thread while the worker serves (lifecycle.py)."""
        settings = self.settings
        max_batch_size = settings.batching_for(model.name).max_batch_size if settings.batching else 1
        cache_dir = settings.tensorrt_cache_dir
        try:
            loaded, warm_up = self.load_stepping_down(model, max_batch_size, cache_dir)
            return loaded, warm_up, self.runner(loaded, warm_up, cache_dir)
        except (ModelInvalid, ValueError) as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001  (a run that fails at warm-up, e.g. out of GPU memory: this model
            # is refused, the worker and the other models serve on)
            log.exception("model %s failed while loading or warming up", model.key)
            return f"failed while loading or warming up: {type(exc).__name__}: {exc}"

    def install(self, model: ModelVersion, prepared: tuple[LoadedModel, dict[int, float], ModelRunner] | str) -> bool:
        """Make a prepared model servable (or record its refusal): on the event loop, in one go."""
        settings = self.settings
        labels = (model.name, str(model.version))
        batching = settings.batching_for(model.name)
        max_batch_size = batching.max_batch_size if settings.batching else 1
        if isinstance(prepared, str):
            self.failures[model.key] = prepared
            self.metrics.model_ready.labels(*labels).set(0)
            log.error("model %s refused: %s", model.key, prepared)
            self.status = self.describe()
            return False
        loaded, warm_up, runner = prepared
        self.failures.pop(model.key, None)
        self.loaded[model.key] = loaded
        self.metrics.model_ready.labels(*labels).set(1)
        self.metrics.model_precision.labels(*labels, loaded.variant).set(1)
        self.metrics.model_degraded.labels(*labels).set(int(model.key in self.degraded))  # 0 exported, not absent

        def observe(images: int, seconds: float) -> None:
            totals = pass_totals()
            child(self.metrics.last_inference, *labels).set(time.time())
            totals.observe(child(self.metrics.batch_size, *labels), images)
            totals.observe(child(self.metrics.compute_duration, *labels), seconds)
            totals.inc(child(self.metrics.batches_by_size, *labels, str(images)))
            totals.inc(child(self.metrics.compute_by_size, *labels, str(images)), seconds)

        self.batchers[model.key] = AdaptiveBatcher(
            model.key,
            runner,
            self.executor,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=batching.max_queue_delay_ms,
            max_queue_images=batching.max_queue_images,
            on_batch=observe,
            inline_up_to=runner.inline_up_to,
            run_now=runner.run_if_cores_free if runner.solo else None,
            alone=lone_http_request,
            full_batch_seconds=full_batch_estimate(warm_up, max_batch_size),
            device_lost=self.lose_device if loaded.on_gpu else None,
        )
        log.info(
            "model %s ready on %s (%s, %d thread(s); warmed batch sizes %s%s: %s; "
            "batches up to %d run on the event loop, up to %d on every core when the others are idle)",
            model.key, loaded.providers[0], loaded.variant, self.threads, ", ".join(map(str, warm_up)),
            (" (each batch padded to the next of them, each on its own session"
             f"{' replaying a CUDA graph' if loaded.graphed else ''})") if loaded.shapes else "",
            ", ".join(f"batch {size} {1000 * seconds:.2f} ms" for size, seconds in warm_up.items() if size in (1, max_batch_size)),
            runner.inline_up_to, SOLO_MAX_BATCH if runner.solo else 0,
        )
        self.status = self.describe()
        return True

    async def unload(self, model: ModelVersion, patience_s: float) -> None:
        """Stop serving a version that requests can no longer reach: let its batcher finish what is queued (up to
        ``patience_s``; requests still waiting then get their deadline's answer), then drop its session."""
        batcher = self.batchers.get(model.key)
        deadline = time.monotonic() + patience_s
        while batcher and (batcher.queue or not batcher.idle) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.batchers.pop(model.key, None)
        if loaded := self.loaded.pop(model.key, None):  # the variant it served is served no more
            self.metrics.model_precision.labels(model.name, str(model.version), loaded.variant).set(0)
        self.failures.pop(model.key, None)
        self.precision_choices.pop(model.key, None)
        self.degraded.pop(model.key, None)
        self.metrics.model_ready.labels(model.name, str(model.version)).set(0)
        self.metrics.model_degraded.labels(model.name, str(model.version)).set(0)
        self.status = self.describe()
        log.info("model %s unloaded", model.key)

    def load_on(
        self, providers: list[str], model: ModelVersion, max_batch_size: int, cache_dir: Path
    ) -> tuple[LoadedModel, dict[int, float]]:
        """The model's session on ``providers`` and its warm-up timings; on the CPU with ``precision: auto``,
        the fastest variant accurate enough (``load_fastest``)."""
        settings = self.settings
        if settings.precision == "auto" and providers[0] == CPU and settings.warmup:
            loaded, warm_up, self.precision_choices[model.key] = self.load_fastest(
                model, providers, max_batch_size, cache_dir)
            return loaded, warm_up
        loaded = load_model(model, providers, settings.precision, self.threads, cache_dir, device_id=self.device_id,
                            cudnn_search=settings.cudnn_conv_algo_search, max_batch_size=max_batch_size,
                            cuda_graphs=settings.cuda_graphs)
        if loaded.on_gpu:
            loaded.pad_batches(batch_shapes(max_batch_size, settings.gpu_batch_shapes), self.on_batch_thread)
        # on a GPU the timed runs go to the batches' thread: the CUDA provider keeps its handles and graphs per thread
        return loaded, loaded.warm_up(max_batch_size, self.on_batch_thread) if settings.warmup else {}

    def on_batch_thread(self, function: Callable[[], T]) -> T:
        """``function()`` on the executor thread that runs this worker's batches, between them; never call it from
        that thread (it would wait for itself)."""
        return self.executor.submit(function).result()

    def load_stepping_down(
        self, model: ModelVersion, max_batch_size: int, cache_dir: Path
    ) -> tuple[LoadedModel, dict[int, float]]:
        """The model on the first of this worker's providers that really takes it. A GPU provider can fail at
        creation or warm-up (its libraries, an engine TensorRT cannot build, memory) or hand the session to
        another provider (a GPU provider whose libraries did not load gives it to the CPU with only a log line of
        its own). With providers set explicitly the model is then refused; with ``auto`` it is loaded again on
        the next provider (TensorRT, then CUDA, then the CPU, each with its own file and threads) and shown as
        degraded, with the reason."""
        providers = self.providers
        self.degraded.pop(model.key, None)
        try:
            while True:
                try:
                    loaded, warm_up = self.load_on(providers, model, max_batch_size, cache_dir)
                    if loaded.providers[0] == providers[0]:
                        return loaded, warm_up
                    reason = f"{providers[0]} was asked for but ONNX Runtime gave {loaded.providers[0]}"
                except ModelFileInvalid:  # no provider would take the file
                    raise
                except Exception as exc:  # noqa: BLE001  (on a GPU: a session or engine that fails, out of memory)
                    if providers[0] == CPU:
                        raise
                    expected = isinstance(exc, (ModelInvalid, ValueError))  # a refusal that says its own reason
                    if not expected:
                        log.exception("model %s failed on %s", model.key, providers[0])
                    reason = str(exc) if expected else f"{type(exc).__name__}: {exc}"
                if self.settings.providers != ("auto",):
                    raise ModelInvalid(f"{reason}; the providers are set explicitly, so the model is not served")
                providers = providers[1:]
                log.error("model %s: %s; loading it again on %s", model.key, reason, providers[0])
                self.degraded[model.key] = f"{reason}; served on {providers[0]}"
        except Exception:
            self.degraded.pop(model.key, None)  # refused, not degraded
            raise

    def load_fastest(
        self, model: ModelVersion, providers: list[str], max_batch_size: int, cache_dir: Path
    ) -> tuple[LoadedModel, dict[int, float], PrecisionChoice]:
        """Load and warm up every variant accurate enough to serve (precision.py); keep the fastest."""
        listed = model.card.get("files", {"fp32": {}})
        present = model.variants()
        timed: dict[str, tuple[LoadedModel, dict[int, float]]] = {}
        refused = {}
        for variant in (v for v in CANDIDATES if v in listed):
            if variant not in present:
                refused[variant] = f"{listed[variant]['file']} is not present (`make variants` derives it)"
            elif shortfall := accuracy_shortfall(model.card, variant, self.settings.precision_tolerance):
                refused[variant] = shortfall
            else:
                try:
                    loaded = load_model(model, providers, variant, self.threads, cache_dir)
                except ModelInvalid as exc:
                    if variant == "fp32":
                        raise
                    refused[variant] = str(exc)  # e.g. a derived file that does not match its card
                    continue
                timed[variant] = loaded, loaded.warm_up(max_batch_size)
        sizes = (1, max_batch_size)
        choice = choose({v: {s: round(1000 * table[s], 3) for s in sizes} for v, (_, table) in timed.items()}, refused)
        log.info("model %s serves %s: %s; timings (ms at batch %s): %s%s", model.key, choice.variant, choice.reason,
                 " and ".join(map(str, sizes)), choice.timings_ms,
                 f"; not candidates: {refused}" if refused else "")
        loaded, warm_up = timed[choice.variant]
        return loaded, warm_up, choice

    def runner(self, loaded: LoadedModel, warm_up: dict[int, float], cache_dir: Path) -> ModelRunner:
        """How this model's batches run. With idle cores to borrow, a model too large to run on the
        event loop gets two more sessions with a thread per core: one for a lone request's batch of up to
        SOLO_MAX_BATCH, one (whose threads do not spin) for queued batches while the other workers are idle
        (cnnserve/serving/runner.py).
        Warm-up timings cannot choose the sizes: every worker warms up at once, so a session with a thread
        per core looks slower then than it is.

        On a GPU no batch runs on the event loop, however fast: a run there is mostly waiting for the device,
        with the GIL released, and the loop should be reading the next requests meanwhile. On an H100 every
        ResNet-18 batch (up to 64 images, under 2 ms) ran on the loop, and one-image requests reached 0.10-0.17
        of in-process ONNX Runtime, while ResNet-50, whose batches ran on the executor thread, reached 0.54-0.61
        (loadtests/results/2026-11-27-gpu). The same trap on the CPU: one worker of two threads, perf_analyzer's gRPC at 64
        clients, ResNet-18 INT8 (batch 1 runs on the loop): 515 calls/s in batches of 1.7; with no batch on the
        loop 828 in batches of 31, since grpc.aio hands the loop one call per pass and a batch on the loop
        blocks the next."""
        settings = self.settings
        inline = 0 if loaded.on_gpu else inline_up_to(warm_up)
        if self.tokens is None or inline >= SOLO_MAX_BATCH:
            return ModelRunner(loaded, inline)
        solo, solo_queued = (load_model(loaded.model, loaded.providers, loaded.variant, self.cores, cache_dir, spin=spin)
                             for spin in (True, False))
        if settings.warmup:
            solo.warm_up(SOLO_MAX_BATCH)
            solo_queued.warm_up(SOLO_MAX_BATCH)
        return ModelRunner(loaded, inline, self.tokens, solo, solo_queued)

    def lose_device(self, exc: Exception) -> bool:
        """Whether a GPU run's error says this worker's CUDA context is lost (``runtime.cuda_context_lost``): every
        later run would fail the same way, while ``/readyz`` said ready. The first such error stops the worker as
        SIGTERM does (what it accepted is answered: 503 with Retry-After, ``errors.DeviceLost``, where its GPU was
        needed) and the server starts another in its place, with a new context."""
        if not cuda_context_lost(exc):
            return False
        if self.device_lost_because is None:
            self.device_lost_because = str(exc)
            log.critical("worker %d: the GPU's CUDA context is lost (%s); stopping, for the server to start another",
                         self.worker_index, exc)
            self.stop_worker()
        return True

    def stop_worker(self) -> None:
        stop_this_worker()

    def batcher(self, model: ModelVersion) -> AdaptiveBatcher:
        batcher = self.batchers.get(model.key)
        if batcher is None:
            raise ModelUnavailable(f"model {model.key} is not loaded: {self.failures.get(model.key, 'unknown')}")
        return batcher

    async def infer(self, model: ModelVersion, images: np.ndarray, deadline: float) -> BatchResult:
        """Queue images at the model's batcher; the answer comes when their batch has run."""
        if self.tokens is None:
            return await self.batcher(model).submit(images, deadline)
        self.tokens.request_began()
        try:
            return await self.batcher(model).submit(images, deadline)
        finally:
            self.tokens.request_ended()

    def check_room(self, model: ModelVersion, count: int, deadline: float | None = None) -> None:
        self.batcher(model).check_room(count, deadline)

    def describe(self) -> dict:
        """Per model version: ready or failed (with the reason), provider and precision.

        Built again only when a model is installed or unloaded; requests only read it.
        """
        statuses = {key: {"status": "failed", "reason": reason} for key, reason in self.failures.items()}
        for key, loaded in self.loaded.items():
            statuses[key] = {
                "status": "degraded" if key in self.degraded else "ready",
                "reason": self.degraded.get(key),
                "provider": loaded.providers[0],
                "providers": loaded.providers,
                "device_id": self.device_id if loaded.on_gpu else None,  # which GPU this worker's sessions use
                "variant": loaded.variant,
                "precision_choice": choice.describe() if (choice := self.precision_choices.get(key)) else None,
                "threads": self.threads,
                "batch_shapes": list(loaded.shapes) or None,
                "cuda_graphs": loaded.graphed,
                "pid": os.getpid(),
            }
        return statuses
