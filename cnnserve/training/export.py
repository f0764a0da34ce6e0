"""Export a trained model to the cnnserve model contract, and prove it matches.

The exported graph takes ``images`` (float32 [N, C, H, W] in [0, 1], N
dynamic), normalizes inside, and returns ``probabilities`` (softmax applied)
and ``boxes`` ((x1, y1, x2, y2) in [0, 1]). Every export is checked with
``onnx.checker`` and against torch on random inputs through ONNX Runtime.

The committed ``model.onnx`` stores its large weights as float16 behind a Cast
to float32 (``store_weights_fp16``): half the bytes, float32 compute (ONNX
Runtime folds the casts when it loads the graph), and the accuracy change is
measured and written on the card. Two variants are derived from it, never
committed (variants.py), with the same float32 inputs and outputs, so clients
never see a difference: ``model.int8.onnx`` (static QDQ quantization calibrated
on training images, for CPU) and ``model.fp16.onnx`` (float16 weights and
compute, for GPU).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from cnnserve.contract.card import INPUT_NAME, OUTPUT_NAMES

OPSET = 18
PARITY_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 7)


class ContractGraph(nn.Module):
    """The exported graph: a normalized two-headed model plus softmax."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        logits, boxes = self.model(images)
        if boxes is None:
            return torch.softmax(logits, dim=1)
        return torch.softmax(logits, dim=1), boxes


def export_onnx(model: nn.Module, path: Path, channels: int, size: int) -> None:
    """Write ``model`` to ``path`` with named inputs/outputs and a dynamic batch axis."""
    graph = ContractGraph(model).eval()
    has_boxes = graph(torch.zeros(1, channels, size, size))
    outputs = list(OUTPUT_NAMES) if isinstance(has_boxes, tuple) else [OUTPUT_NAMES[0]]
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (torch.rand(2, channels, size, size),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=outputs,
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            external_data=False,
            verbose=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def cpu_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predictor(path: Path, batch_size: int = 256):
    session = cpu_session(path)

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [session.run(None, {INPUT_NAME: images[i : i + batch_size]}) for i in range(0, len(images), batch_size)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return predict


def check_parity(model: nn.Module, path: Path, channels: int, size: int, seed: int = 0) -> dict:
    """Max |ONNX Runtime - torch| per output at each batch size; raises above tolerance."""
    graph = ContractGraph(model).eval()
    session = cpu_session(path)
    rng = np.random.default_rng(seed)
    report = {}
    for batch in PARITY_BATCHES:
        images = rng.random((batch, channels, size, size), dtype=np.float32)
        with torch.inference_mode():
            expected = graph(torch.from_numpy(images))
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {INPUT_NAME: images})
        diffs = {name: float(np.abs(g - e.numpy()).max()) for name, g, e in zip(OUTPUT_NAMES, got, expected)}
        report[f"batch_{batch}"] = diffs
        worst = max(diffs.values())
        if worst > PARITY_TOLERANCE:
            raise AssertionError(f"{path}: ONNX Runtime differs from torch by {worst:.2e} at batch {batch}")
    return {"tolerance": PARITY_TOLERANCE, "max_abs_diff": report}


COMPACT_MIN_ELEMENTS = 4096  # smaller tensors (biases, norms) stay float32: they weigh nothing


def store_weights_fp16(source: Path, target: Path) -> None:
    """Rewrite ``source`` with every large float32 initializer stored as float16 plus a Cast back."""
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    kept, casts = [], []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or int(np.prod(tensor.dims)) < COMPACT_MIN_ELEMENTS:
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{tensor.name}.fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=TensorProto.FLOAT, name=f"{tensor.name}.cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))
    onnx.checker.check_model(str(target), full_check=True)
