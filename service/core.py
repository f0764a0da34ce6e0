"""The inference core: protocol-neutral, shared by every adapter.

An adapter hands it image files or a decoded tensor plus the model it wants;
the core resolves the model, decodes, sends the images to the model's batcher
(where requests from every protocol meet), and turns the outputs into answers. It records the request metrics, so every
protocol is counted the same way.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np

from .batcher import BatchResult
from .config import Settings
from .errors import InvalidInput, ModelUnavailable, ServiceError, TooLarge
from .metrics import RequestMetrics, child, pass_totals
from .postprocess import describe
from .preprocess import decode_image
from .repository import ModelVersion, Repository

INLINE_DECODE_BYTES = 256 * 1024  # larger payloads are decoded in a worker thread

Backend = Callable[[ModelVersion, np.ndarray, float], Awaitable[BatchResult]]
StatusSource = Callable[[], dict]
RoomCheck = Callable[[ModelVersion, int], None]


def check_tensor(model: ModelVersion, images: np.ndarray) -> None:
    """The contract's input: [N, C, H, W] of finite values (NaN and Inf are refused)."""
    expected = model.input_shape
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise InvalidInput(
            f"{model.name} takes images of shape [N, {', '.join(map(str, expected))}], got {list(images.shape)}"
        )
    # A NaN or an infinity anywhere makes the sum non-finite; only then look element by element.
    if not math.isfinite(images.sum()) and not np.isfinite(images).all():
        raise InvalidInput("the input contains NaN or infinite values")


class Tracked:
    """One request being counted: its outcome and duration, and in-flight once admitted.

    Requests that never resolve a model are labelled ``unknown``, so a client
    cannot grow the label set with made-up model names. A plain class rather
    than a generator context manager: it runs on every request.
    """

    __slots__ = ("metrics", "model", "protocol", "started")

    def __init__(self, metrics: RequestMetrics, protocol: str):
        self.metrics, self.protocol = metrics, protocol
        self.model: ModelVersion | None = None
        self.started = time.perf_counter()

    def __enter__(self) -> Tracked:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            outcome = "success"
        elif isinstance(error, ServiceError):
            outcome = error.outcome
        elif isinstance(error, asyncio.CancelledError):  # the client left
            outcome = "client_error"
        else:
            outcome = "server_error"
        labels = self.model.metric_labels if self.model else ("unknown", "")
        totals = pass_totals()
        if self.model:
            totals.inc(child(self.metrics.inflight, *labels), -1)
        totals.inc(child(self.metrics.requests, *labels, self.protocol, outcome))
        totals.observe(child(self.metrics.request_duration, *labels, self.protocol, outcome),
                       time.perf_counter() - self.started)


@dataclass
class TensorResult:
    model: ModelVersion
    probabilities: np.ndarray
    boxes: np.ndarray | None
    timings: dict


class InferenceCore:
    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        backend: Backend,
        runtime_status: StatusSource,
        check_room: RoomCheck,
    ):
        self.settings = settings
        self.repository = repository
        self.backend = backend
        self.runtime_status = runtime_status
        self.check_room = check_room
        self.metrics = RequestMetrics()
        self.batch_limits = {  # the most images one batch of each model takes (1 with batching off)
            name: settings.batching_for(name).max_batch_size if settings.batching else 1 for name in repository.models
        }

    def resolve(self, name: str | None, version: int | None) -> ModelVersion:
        name = name or self.repository.default_model()
        if name is None:
            raise ModelUnavailable("no model is being served; see GET /models for the reasons")
        model = self.repository.resolve(name, version)
        status = self.runtime_status().get(model.key)
        if status is None or status["status"] != "ready":
            reason = status["reason"] if status else "the inference service has not reported it yet"
            raise ModelUnavailable(f"model {model.key} is not ready: {reason}")
        return model

    def track(self, protocol: str) -> Tracked:
        """Count one request (``with core.track(protocol) as record:``); see ``Tracked``."""
        return Tracked(self.metrics, protocol)

    def admit(self, record: Tracked, model: ModelVersion) -> None:
        record.model = model
        pass_totals().inc(child(self.metrics.inflight, *model.metric_labels))

    def check_images(self, model: ModelVersion, count: int) -> None:
        """Refuse before any decoding: no image, too many for one request, or no room in the model's queue."""
        if count == 0:
            raise InvalidInput("no image was sent")
        if count > self.settings.max_images_per_request:
            raise TooLarge(f"{count} images in one request; the limit is {self.settings.max_images_per_request}")
        self.check_room(model, count)

    def check_top_k(self, model: ModelVersion, top_k: int | None) -> int:
        top_k = self.settings.default_top_k if top_k is None else top_k
        if not 1 <= top_k <= len(model.labels):
            raise InvalidInput(f"top_k must be between 1 and {len(model.labels)} for {model.name}, got {top_k}")
        return top_k

    def decode_all(self, model: ModelVersion, files: list[bytes]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        channels, height, width = model.input_shape
        arrays, sizes = [], []
        for index, data in enumerate(files):
            try:
                array, size = decode_image(data, channels, height, width, self.settings.max_image_pixels)
            except ServiceError as exc:
                if len(files) > 1:
                    exc.message = f"image {index}: {exc.message}"
                    exc.args = (exc.message,)
                raise
            arrays.append(array)
            sizes.append(size)
        return np.stack(arrays), sizes

    async def decode(self, model: ModelVersion, files: list[bytes]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Decode on the event loop when small, in a worker thread when large; timed."""
        began = time.perf_counter()
        if sum(len(f) for f in files) > INLINE_DECODE_BYTES:
            decoded = await asyncio.to_thread(self.decode_all, model, files)
        else:
            decoded = self.decode_all(model, files)
        seconds = time.perf_counter() - began
        pass_totals().observe(child(self.metrics.preprocess_duration, *model.metric_labels), seconds)
        return decoded

    def deadline(self, timeout_ms: float | None) -> float:
        """A request's deadline: its own timeout if it gave one (never beyond the server's), else the server's."""
        limit = self.settings.request_timeout_ms
        if timeout_ms is not None and not 0 < timeout_ms:
            raise InvalidInput(f"the timeout must be a positive number of milliseconds, got {timeout_ms}")
        return time.perf_counter() + min(timeout_ms or limit, limit) / 1000

    async def predict_files(
        self,
        files: list[bytes],
        model: str | None,
        version: int | None,
        top_k: int | None,
        protocol: str,
        timeout_ms: float | None = None,
    ) -> dict:
        """Answers (label, top-k, box in the image's own pixels) for image files."""
        with self.track(protocol) as record:
            deadline = self.deadline(timeout_ms)
            resolved = self.resolve(model, version)
            self.admit(record, resolved)
            top_k = self.check_top_k(resolved, top_k)
            self.check_images(resolved, len(files))
            began = time.perf_counter()
            images, sizes = await self.decode(resolved, files)
            decode_ms = (time.perf_counter() - began) * 1000
            result = await self.run(resolved, images, deadline)
            predictions = [
                describe(result.probabilities[i], None if result.boxes is None else result.boxes[i],
                         resolved.labels, top_k, sizes[i])
                for i in range(len(files))
            ]
            timings = {"decode_ms": round(decode_ms, 3), **result.timings}
            timings["total_ms"] = round((time.perf_counter() - began) * 1000, 3)
            return {"model": resolved.name, "version": resolved.version, "predictions": predictions, "timings": timings}

    async def run(self, model: ModelVersion, images: np.ndarray, deadline: float) -> TensorResult:
        """Send images through the model's batcher, in chunks no larger than its batches."""
        limit = self.batch_limits[model.name]
        if len(images) <= limit:
            result = await self.backend(model, images, deadline)
            queue_ms, compute_ms, batch_images = result.queue_ms, result.compute_ms, result.batch_images
            probabilities, boxes = result.probabilities, result.boxes
        else:
            chunks = [images[i : i + limit] for i in range(0, len(images), limit)]
            results = await asyncio.gather(*(self.backend(model, chunk, deadline) for chunk in chunks))
            queue_ms = max(r.queue_ms for r in results)
            compute_ms = max(r.compute_ms for r in results)
            batch_images = max(r.batch_images for r in results)
            probabilities = np.concatenate([r.probabilities for r in results])
            boxes = None if results[0].boxes is None else np.concatenate([r.boxes for r in results])
        pass_totals().observe(child(self.metrics.queue_duration, *model.metric_labels), queue_ms / 1000)
        timings = {"queue_ms": round(queue_ms, 3), "compute_ms": round(compute_ms, 3), "batch_images": batch_images}
        return TensorResult(model, probabilities, boxes, timings)
