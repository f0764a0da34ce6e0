"""What the serving tests share: a PNG encoder, a reader of Prometheus' text format, V2 request builders
(JSON for REST, protobuf for gRPC), where an answer's box edges lie, the folder a server's workers share, and
LeNet-5s rewired to misbehave."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import psutil
from PIL import Image
from prometheus_client import CollectorRegistry

from cnnserve.serving.control import server_folder
from cnnserve.serving.v2 import inference_pb2 as pb
from loadtests.predict_bench import metric_total  # noqa: F401  (the serving tests read metrics with it)
from tests.committed import VERSIONS
from tests.conftest import MODELS_DIR


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def edge_points(box: dict, samples: int = 40) -> list[tuple[int, int]]:
    """Points along the box's left, right and bottom edges (the label may cover part of the top one)."""
    xs, ys = np.linspace(box["x1"], box["x2"], samples), np.linspace(box["y1"], box["y2"], samples)
    return [(round(box["x1"]), round(y)) for y in ys] + [(round(box["x2"]), round(y)) for y in ys] + \
        [(round(x), round(box["y2"])) for x in xs]


GOOD = png(Image.new("RGB", (64, 64), (20, 20, 20)))  # a valid picture for any committed model


def samples(registry: CollectorRegistry) -> dict:
    """Every sample of an in-process registry by name and labels (creation times left out)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect() for s in metric.samples if not s.name.endswith("_created")}


def v2_json(images: np.ndarray) -> dict:
    """A V2 REST inference request with ``images`` as JSON data."""
    return {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(images.shape),
                        "data": images.ravel().tolist()}]}


def v2_grey(shape: list[int]) -> dict:
    """A V2 REST inference request of mid-grey images of ``shape``."""
    return v2_json(np.full(shape, 0.5, np.float32))


def grpc_request(model: str, images: np.ndarray, outputs=()) -> pb.ModelInferRequest:
    """A gRPC ModelInfer request with ``images`` as raw FP32 contents (all outputs unless named)."""
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=list(images.shape))],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=o) for o in outputs],
        raw_input_contents=[images.astype(np.float32).tobytes()],
    )


def on_cuda(loaded):
    """``loaded`` (a runtime.LoadedModel) as a CUDA session reports itself, and so every further session it opens;
    they all run on the CPU, which is what this machine has."""
    from dataclasses import replace

    from cnnserve.serving.runtime import CPU, CUDA

    def reports_cuda(session):
        session.get_providers = lambda: [CUDA, CPU]
        return session

    return replace(loaded, providers=[CUDA, CPU], open_session=lambda: reports_cuda(loaded.open_session()))


def shared_folder_holding(server, models_dir: Path, names: set[str], seconds: float = 20.0) -> Path:
    """The folder ``server``'s workers share, once it holds ``names``: each worker writes there as it starts, and the
    server's first ready answer can come from one while another is still starting."""
    folder = server_folder(models_dir, psutil.Process(server.process.pid), make=False)
    deadline = time.monotonic() + seconds
    while not (folder.exists() and {path.name for path in folder.iterdir()} >= names):
        assert time.monotonic() < deadline, f"{folder} does not hold {sorted(names)} after {seconds} s"
        time.sleep(0.1)
    return folder


def lenet5_rewired(root: Path, name: str, rewire, **card) -> Path:
    """A repository under ``root`` holding ``name``/1: the committed LeNet-5 whose ONNX graph ``rewire`` edits in
    place (its ``probabilities`` output renamed ``unchecked`` for the edit to build on), with a card of its own
    (``card``: fields that change) whose sha256 matches; ``root``, to serve."""
    source = MODELS_DIR / "lenet5-digits" / str(VERSIONS["lenet5-digits"])
    folder = root / name / "1"
    folder.mkdir(parents=True)
    model = onnx.load(source / "model.onnx")
    for node in model.graph.node:
        node.output[:] = ["unchecked" if output == "probabilities" else output for output in node.output]
    rewire(model.graph)
    onnx.save(model, folder / "model.onnx")
    committed = json.loads((source / "card.json").read_text())
    data = (folder / "model.onnx").read_bytes()
    fp32 = {**committed["files"]["fp32"], "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "card.json").write_text(json.dumps({**committed, "name": name, "version": 1, "files": {"fp32": fp32},
                                                  **card}))
    shutil.copy(source / "training.png", folder)
    return root
