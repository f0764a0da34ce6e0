"""The Open Inference Protocol's data plane, shared by its REST and gRPC adapters.

It speaks in plain dicts and ``Tensor``s; the adapters only translate their
wire formats. Inference goes through the inference core's one entry point
(``InferenceCore.infer``), and so through the same batcher as ``POST /predict``.

Inputs a model accepts (exactly one per request):
- ``images``: FP32 [N, C, H, W] in [0, 1] (the model contract), or UINT8 of the
  same shape in [0, 255];
- ``image_bytes``: BYTES [N] (or [N, 1]) of encoded image files, decoded and
  fitted by the server (with the zoom-in pass for small digits).
Outputs: ``probabilities`` [N, K] and ``boxes`` [N, 4], both FP32; boxes are
normalized to the input tensor, or for ``image_bytes`` to each image file.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import numpy as np

from ... import __version__
from ...contract.card import BOXES, INPUT_NAME, PROBABILITIES
from ..control import ControlFile
from ..core import SERVING, InferenceCore, TensorResult, ready
from ..errors import InvalidInput, ModelNotFound, ModelUnavailable, whole_number
from ..repository import ModelVersion
from .statistics import model_statistics
from .tensors import BYTES, Limits, Tensor

IMAGE_BYTES = "image_bytes"
SERVER_NAME = "cnnserve"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]
CONTROL_TIMEOUT_S = 300.0  # loading includes warm-up; every worker loads at once
PLATFORM = "onnxruntime_onnx"

Compute = Callable[[ModelVersion, np.ndarray, float], Awaitable[TensorResult]]


def parse_version(version: str | int | None) -> int | None:
    if version in (None, ""):
        return None
    return version if isinstance(version, int) else whole_number(version, "model version")


class DataPlane:
    def __init__(self, core: InferenceCore, compute: Compute | None = None):
        """``compute`` turns a model's input into its outputs: the core's batcher and ONNX Runtime unless
        given (the no-op routes give zeros, loadtests/bench/noop_routes.py)."""
        self.core = core
        self.compute = compute or core.run
        self.limits = Limits.of(core.settings)  # how large a wire tensor may be, the same for every request

    @property
    def repository(self):
        return self.core.repository

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    async def server_ready(self) -> bool:
        return ready(self.core.host.status, self.repository)

    def repository_index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: every version this worker serves or refused, and in explicit mode every
        other model folder as unloaded."""
        entries = [{"name": v.name, "version": str(v.version),
                    "state": "READY" if self.core.host.status[v.key]["status"] in SERVING else "UNAVAILABLE",
                    "reason": self.core.host.status[v.key]["reason"] or ""} for v in self.repository.versions()]
        for key, reason in self.repository.failures.items():
            name, _, version = key.partition("/")
            entries.append({"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason})
        listed = {e["name"] for e in entries}
        if self.core.settings.model_control_mode == "explicit" and self.repository.root.is_dir():
            entries += [{"name": p.name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
                        for p in sorted(self.repository.root.iterdir())
                        if p.is_dir() and not p.name.startswith(".") and p.name not in listed]
        return [e for e in entries if e["state"] == "READY"] if ready_only else entries

    async def load(self, name: str) -> None:
        """Serve ``name`` (its versions in the folder) in every worker; returns once all have, or raises with what
        each refused."""
        reports = await self.control(name, lambda names: names | {name})
        problems = sorted({f"{key}: {reason}" for r in reports for key, reason in r["refused"].items()
                           if key.split("/")[0] == name})
        if not problems and all(name in r["serving"] for r in reports):
            return
        if not any(name in r["serving"] for r in reports):  # nothing of it serves: stop asking for it (Triton's way)
            await self.control(name, lambda names: names - {name})
        raise InvalidInput(f"model {name!r} was not loaded: "
                           + ("; ".join(problems) or "no version serves in every worker (unloaded meanwhile?)"))

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` in every worker (queued requests are answered first); returns once all have."""
        await self.control(name, lambda names: names - {name})

    async def control(self, name: str, change) -> list[dict]:
        settings = self.core.settings
        if settings.model_control_mode != "explicit":
            raise InvalidInput(f"loading and unloading models needs model_control_mode: explicit "
                               f"(this server runs {settings.model_control_mode!r})")
        if not self.repository.has_folder(name):
            raise ModelNotFound(f"no model {name!r} in the model repository {settings.models_dir}")
        control = ControlFile.for_this_server(settings.models_dir)
        generation = await asyncio.to_thread(control.ask, change)
        try:
            return await control.settled(generation, self.core.host.workers, CONTROL_TIMEOUT_S)
        except TimeoutError as exc:
            raise ModelUnavailable(str(exc)) from None

    def statistics(self, name: str | None = None, version: str | int | None = None) -> dict:
        """Triton's statistics for every model (no name), one model, or one version (statistics.py)."""
        return model_statistics(self.repository, name or None, parse_version(version))

    async def model_ready(self, name: str, version: str | int | None = None) -> bool:
        """Whether the version serves; a model in the repository's folder that is not loaded is simply not ready."""
        try:
            model = self.repository.resolve(name, parse_version(version))
        except ModelNotFound:
            if self.repository.has_folder(name):
                return False
            raise
        return self.core.host.status[model.key]["status"] in SERVING

    def model_metadata(self, name: str, version: str | int | None = None) -> dict:
        model = self.repository.resolve(name, parse_version(version))
        channels, height, width = model.input_shape
        outputs = [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(model.labels)]}]
        if model.has_boxes:
            outputs.append({"name": BOXES, "datatype": "FP32", "shape": [-1, 4]})
        return {
            "name": model.name,
            "versions": [str(v) for v in sorted(self.repository.models[model.name])],
            "platform": PLATFORM,
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, channels, height, width]}],
            "outputs": outputs,
        }

    def model_config(self, name: str, version: str | int | None = None) -> dict:
        """Triton's configuration form, which perf_analyzer and Triton's clients read."""
        model = self.repository.resolve(name, parse_version(version))
        batching = self.core.settings.batching_for(model.name)
        metadata = self.model_metadata(name, version)
        config = {
            "name": model.name,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "max_batch_size": self.core.settings.max_images_per_request,
            "input": [
                {"name": INPUT_NAME, "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": list(model.input_shape)}
            ],
            "output": [
                {"name": o["name"], "data_type": "TYPE_FP32", "dims": o["shape"][1:]} for o in metadata["outputs"]
            ],
        }
        if self.core.settings.batching:
            config["dynamic_batching"] = {
                "preferred_batch_size": [batching.max_batch_size],
                "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
            }
        return config

    async def infer(
        self,
        name: str,
        version: str | int | None,
        read_inputs: Callable[[], list[Tensor]],
        requested: list[str] | None,
        protocol: str,
        timeout_ms: float | None = None,
    ) -> tuple[ModelVersion, list[Tensor], dict]:
        """Run one V2 inference request: the model served, the output tensors, and
        the timings (queue_ms, compute_ms, batch_images) sent back as response parameters.

        ``read_inputs`` decodes the wire tensors; it runs once the model is
        known, so an unknown model is reported before any malformed data.
        """
        def read(model: ModelVersion) -> list[bytes] | np.ndarray:
            unknown = [o for o in requested or () if o not in model.output_names]
            if unknown:
                raise InvalidInput(f"unknown output(s) {unknown}; {model.name} gives {model.output_names}")
            if requested and len(set(requested)) < len(requested):
                raise InvalidInput(f"an output is requested twice: {requested}")
            tensor = single_input(read_inputs())
            return files(tensor) if tensor.name == IMAGE_BYTES else pixels(model, tensor)

        with self.core.refusals(protocol):
            number = parse_version(version)
        result = await self.core.infer(protocol, name, number, timeout_ms, read, self.compute)
        outputs = {PROBABILITIES: result.probabilities, BOXES: result.boxes}
        wanted = requested or result.model.output_names
        return result.model, [Tensor(n, "FP32", np.asarray(outputs[n], dtype=np.float32)) for n in wanted], result.timings


def files(tensor: Tensor) -> list[bytes]:
    """Encoded image files, for the server to decode and fit (boxes come back normalized to each image)."""
    if tensor.datatype != BYTES or tensor.array.ndim not in (1, 2) or tensor.array.shape[1:] not in ((), (1,)):
        raise InvalidInput(f"{IMAGE_BYTES!r} must be BYTES of shape [N] or [N, 1]")
    return list(tensor.array.ravel())


def pixels(model: ModelVersion, tensor: Tensor) -> np.ndarray:
    """The model input from pixels as sent: FP32 in [0, 1], or UINT8 in [0, 255]."""
    if tensor.name != INPUT_NAME:
        raise InvalidInput(f"unknown input {tensor.name!r}; {model.name} takes {INPUT_NAME!r} or {IMAGE_BYTES!r}")
    if tensor.datatype == "FP32":
        return tensor.array
    if tensor.datatype == "UINT8":
        return tensor.array.astype(np.float32) * (1.0 / 255.0)
    raise InvalidInput(f"input {INPUT_NAME!r} must be FP32 (or UINT8), got {tensor.datatype}")


def single_input(inputs: list[Tensor]) -> Tensor:
    if len(inputs) != 1:
        names = [t.name for t in inputs] or "none"
        raise InvalidInput(f"send exactly one input, {INPUT_NAME!r} or {IMAGE_BYTES!r}; got {names}")
    return inputs[0]
