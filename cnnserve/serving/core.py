"""The inference core: protocol-neutral, shared by every adapter.

A protocol plane hands ``InferenceCore.infer`` the model it wants and a way to
read image files or a decoded tensor from its request; the core resolves the
model, decodes, sends the images to the model's batcher
(where requests from every protocol meet), looks again at small digits (the
zoom-in pass, ``refine.py``), maps boxes back to each image and turns the
outputs into answers. It records the request metrics, so every protocol is
counted the same way.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

import numpy as np
from PIL import Image

from ..contract.images import ImageRejected, image_to_input, open_image
from ..contract.letterbox import WHOLE, Placement, Region
from .batcher import BatchResult
from .config import Settings
from .errors import InvalidInput, ModelUnavailable, ServiceError, TooLarge, rejected_image
from .metrics import RequestMetrics, child, pass_totals
from .postprocess import ordered_corners
from .refine import needs_zoom, zoom_region
from .repository import ModelVersion, Repository

# A request decodes on the event loop only when its images are few pixels in all, as their headers declare, and
# few bytes: PNG and WebP cost 10-18 ms a megapixel here, so that holds the loop about a millisecond. By bytes
# alone a 1.6 KB flat WebP of 40 megapixels decoded on the loop (64 of them held every request of the worker for
# 30 s); by pixels alone, a small progressive JPEG of many scans could.
INLINE_DECODE_PIXELS = 256 * 256
INLINE_DECODE_BYTES = 256 * 1024

Compute = Callable[[ModelVersion, np.ndarray, float], Awaitable["TensorResult"]]
Payload = list[bytes] | np.ndarray  # image files, or the model's input tensor [N, C, H, W]


SERVING = ("ready", "degraded")  # degraded: served, on another execution provider than asked (host.load_stepping_down)


def ready(status: dict, repository: Repository) -> bool:
    """A worker's readiness (``/readyz``, V2's server ready): every model version loaded and warmed up, or refused
    with a reason, and at least one serving, unless none was asked for (an empty repository, explicit mode before
    any load). A pod whose every model was refused took traffic, answering only 503."""
    versions = repository.versions()
    if not all(model.key in status for model in versions):
        return False
    return any(status[model.key]["status"] in SERVING for model in versions) or not (versions or repository.failures)


def which_image(index: int, count: int) -> str:
    """How a refusal names the image it is about: by its index when the request holds several."""
    return f"image {index}: " if count > 1 else ""


class Host(Protocol):
    """What the core needs of the models it serves (host.ModelHost in a worker)."""

    status: dict  # per model version key: {"status": "ready" | "degraded" | "failed", "reason": ..., ...}
    workers: int  # the worker processes of this server, each with a host like this one

    async def infer(self, model: ModelVersion, images: np.ndarray, deadline: float) -> BatchResult:
        """Run ``images`` (no more than one batch) through the model's batcher."""

    def check_room(self, model: ModelVersion, count: int, deadline: float | None = None) -> None:
        """Raise ``errors.Overloaded`` when the model's queue has no room for ``count`` more images, or (with the
        request's ``deadline``) holds more work than the request has time."""


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


class Refusals:
    """A protocol plane's reading before a model is known (``with core.refusals(protocol):``): a refusal there
    is counted under model ``unknown``, as ``Tracked`` counts what follows. A plain class for the same reason."""

    __slots__ = ("core", "protocol")

    def __init__(self, core: InferenceCore, protocol: str):
        self.core, self.protocol = core, protocol

    def __enter__(self) -> Refusals:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if isinstance(error, ServiceError):
            self.core.count_refusal(self.protocol, error.outcome)


@dataclass
class TensorResult:
    model: ModelVersion
    probabilities: np.ndarray
    boxes: np.ndarray | None  # normalized to the model input, or (FilesResult) to each image
    timings: dict


@dataclass
class FilesResult(TensorResult):
    placements: list[Placement]


class InferenceCore:
    def __init__(self, settings: Settings, repository: Repository, host: Host):
        self.settings = settings
        self.repository = repository
        self.host = host
        self.metrics = RequestMetrics()
        self.batch_limits = {  # the most images one batch of each model takes (1 with batching off)
            name: settings.batching_for(name).max_batch_size if settings.batching else 1 for name in repository.models
        }

    def resolve(self, name: str | None, version: int | None) -> ModelVersion:
        name = name or self.repository.default_model()
        if name is None:
            raise ModelUnavailable("no model is being served; see GET /models for the reasons")
        model = self.repository.resolve(name, version)
        status = self.host.status[model.key]
        if status["status"] not in SERVING:
            raise ModelUnavailable(f"model {model.key} is not ready: {status['reason']}")
        return model

    def track(self, protocol: str) -> Tracked:
        """Count one request (``with core.track(protocol) as record:``); see ``Tracked``."""
        return Tracked(self.metrics, protocol)

    def refusals(self, protocol: str) -> Refusals:
        """Count a refusal before a model is read (``with core.refusals(protocol):``); see ``Refusals``."""
        return Refusals(self, protocol)

    def count_refusal(self, protocol: str, outcome: str) -> None:
        """A request refused before a model was read (no valid API key, a body over the limit, a malformed
        form): counted under model ``unknown``."""
        pass_totals().inc(child(self.metrics.requests, "unknown", "", protocol, outcome))

    def admit(self, record: Tracked, model: ModelVersion) -> None:
        record.model = model
        pass_totals().inc(child(self.metrics.inflight, *model.metric_labels))

    def check_images(self, model: ModelVersion, count: int, deadline: float) -> None:
        """Refuse before any decoding: no image, too many for one request, or no room or time in the model's
        queue."""
        if count == 0:
            raise InvalidInput("no image was sent")
        if count > self.settings.max_images_per_request:
            raise TooLarge(f"{count} images in one request; the limit is {self.settings.max_images_per_request}")
        self.host.check_room(model, count, deadline)

    def check_top_k(self, model: ModelVersion, top_k: int | None) -> int:
        """The labels to list: as asked, within the model's; unasked, the default, or every label of a model that
        has fewer (a cat/dog model got 400 on every request that left top_k out)."""
        if top_k is None:
            return min(self.settings.default_top_k, len(model.labels))
        if not 1 <= top_k <= len(model.labels):
            raise InvalidInput(f"top_k must be between 1 and {len(model.labels)} for {model.name}, got {top_k}")
        return top_k

    def opened(self, files: list[bytes]) -> list[Image.Image]:
        """Each file's image with its header checked (``open_image``), nothing decoded."""
        images = []
        for index, data in enumerate(files):
            try:
                images.append(open_image(data, self.settings.max_image_pixels))
            except ImageRejected as exc:
                raise rejected_image(exc, which_image(index, len(files))) from None
        return images

    def decode_all(
        self, model: ModelVersion, images: list[Image.Image], regions: list[Region] | None = None
    ) -> tuple[np.ndarray, list[Placement]]:
        channels, height, width = model.input_shape
        arrays, placements = [], []
        for index, image in enumerate(images):
            try:
                array, where = image_to_input(image, channels, height, width, model.resize_policy,
                                              regions[index] if regions else WHOLE)
            except ImageRejected as exc:
                raise rejected_image(exc, which_image(index, len(images))) from None
            arrays.append(array)
            placements.append(where)
        return np.stack(arrays), placements

    async def decode(
        self, model: ModelVersion, files: list[bytes], regions: list[Region] | None = None
    ) -> tuple[np.ndarray, list[Placement]]:
        """Decode on the event loop when the images are small (``INLINE_DECODE_PIXELS``), else in a worker thread;
        timed."""
        began = time.perf_counter()
        images = self.opened(files)
        if (sum(image.width * image.height for image in images) > INLINE_DECODE_PIXELS
                or sum(map(len, files)) > INLINE_DECODE_BYTES):
            decoded = await asyncio.to_thread(self.decode_all, model, images, regions)
        else:
            decoded = self.decode_all(model, images, regions)
        seconds = time.perf_counter() - began
        pass_totals().observe(child(self.metrics.preprocess_duration, *model.metric_labels), seconds)
        return decoded

    def deadline(self, timeout_ms: float | None) -> float:
        """A request's deadline: its own timeout if it gave one (never beyond the server's), else the server's."""
        limit = self.settings.request_timeout_ms
        if timeout_ms is not None and not 0 < timeout_ms:
            raise InvalidInput(f"the timeout must be a positive number of milliseconds, got {timeout_ms}")
        return time.perf_counter() + min(timeout_ms or limit, limit) / 1000

    async def infer(
        self,
        protocol: str,
        name: str | None,
        version: int | None,
        timeout_ms: float | None,
        read: Callable[[ModelVersion], Payload],
        compute: Compute | None = None,
    ) -> TensorResult | FilesResult:
        """The one entry point of every protocol: count, set the deadline, resolve and admit the model, read
        the request, check it, decode and run it. A protocol plane only translates: ``read`` parses its
        request once the model is known (so an unknown model is reported before malformed data) and gives
        image files or the model's input tensor; the plane turns the result into its answer.

        ``compute`` is ``run`` unless given (the no-op routes give zeros).
        """
        with self.track(protocol) as record:
            deadline = self.deadline(timeout_ms)
            model = self.resolve(name, version)
            self.admit(record, model)
            payload = read(model)
            if isinstance(payload, np.ndarray):
                check_tensor(model, payload)
                self.check_images(model, len(payload), deadline)
                return await (compute or self.run)(model, payload, deadline)
            self.check_images(model, len(payload), deadline)
            return await self.infer_files(model, payload, deadline, compute)

    async def infer_files(
        self, model: ModelVersion, files: list[bytes], deadline: float, compute: Compute | None = None
    ) -> FilesResult:
        """Decode, run, look again at small digits, and map boxes to each image ([0, 1] of its own size).

        ``compute`` is ``run`` unless given (the no-op routes give zeros).
        """
        compute = compute or self.run
        began = time.perf_counter()
        images, placements = await self.decode(model, files)
        decode_ms = (time.perf_counter() - began) * 1000
        result = await compute(model, images, deadline)
        probabilities, boxes, timings = result.probabilities, result.boxes, result.timings
        zoomed = []
        if boxes is not None:
            below = self.settings.zoom_in_below
            zoomed = [i for i in range(len(files)) if below > 0 and needs_zoom(boxes[i], below)]
            boxes = np.stack([where.to_source(box) for where, box in zip(placements, boxes)])
        if zoomed:
            began = time.perf_counter()
            regions = [zoom_region(boxes[i], placements[i].source) for i in zoomed]
            crops, crop_placements = await self.decode(model, [files[i] for i in zoomed], regions)
            decode_ms += (time.perf_counter() - began) * 1000
            second = await compute(model, crops, deadline)
            probabilities = probabilities.copy()
            for j, i in enumerate(zoomed):
                probabilities[i] = second.probabilities[j]
                boxes[i] = crop_placements[j].to_source(second.boxes[j])
            timings = {
                **timings,
                "queue_ms": round(timings["queue_ms"] + second.timings["queue_ms"], 3),
                "compute_ms": round(timings["compute_ms"] + second.timings["compute_ms"], 3),
            }
        timings = {"decode_ms": round(decode_ms, 3), **timings, "zoomed_images": len(zoomed)}
        return FilesResult(model, probabilities, boxes, timings, placements)

    async def run(self, model: ModelVersion, images: np.ndarray, deadline: float) -> TensorResult:
        """Send images through the model's batcher, in chunks no larger than its batches."""
        limit = self.batch_limits[model.name]
        if len(images) <= limit:
            result = await self.host.infer(model, images, deadline)
            queue_ms, compute_ms, batch_images = result.queue_ms, result.compute_ms, result.batch_images
            probabilities, boxes = result.probabilities, result.boxes
        else:
            chunks = [images[i : i + limit] for i in range(0, len(images), limit)]
            results = await asyncio.gather(*(self.host.infer(model, chunk, deadline) for chunk in chunks))
            queue_ms = max(r.queue_ms for r in results)
            compute_ms = max(r.compute_ms for r in results)
            batch_images = max(r.batch_images for r in results)
            probabilities = np.concatenate([r.probabilities for r in results])
            boxes = None if results[0].boxes is None else np.concatenate([r.boxes for r in results])
        totals = pass_totals()
        totals.observe(child(self.metrics.queue_duration, *model.metric_labels), queue_ms / 1000)
        totals.inc(child(self.metrics.request_compute, *model.metric_labels), compute_ms / 1000)
        timings = {"queue_ms": round(queue_ms, 3), "compute_ms": round(compute_ms, 3), "batch_images": batch_images}
        return TensorResult(model, probabilities, None if boxes is None else ordered_corners(boxes), timings)
