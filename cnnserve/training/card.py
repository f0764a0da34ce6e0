"""The model card: everything the service and a reader need to know about one
model version, written beside ``model.onnx`` as ``card.json``."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import onnxruntime as ort
import torch

from cnnserve.contract.card import BOX_FORMAT, BOXES, CARD_FILE, INPUT_NAME, PROBABILITIES, RESIZE_POLICY, file_sha256

from ..machine import available_cores
from .export import OPSET


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": available_cores(),  # those training could use (its affinity, its container's CPU limit)
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        **({"gpu": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {}),
    }


def model_card(
    *,
    name: str,
    version: int,
    architecture: str,
    architecture_options: dict,
    labels: list[str],
    channels: int,
    input_size: int,
    mean: list[float],
    std: list[float],
    files: dict[str, Path],
    training: dict | None,
    metrics: dict | None,
    variant_metrics: dict[str, dict],
    parity: dict,
    weights: dict | None = None,
) -> dict:
    """Assemble the card; ``training``/``metrics`` are None for untrained exports."""
    trained = training is not None
    return {
        "name": name,
        "version": version,
        "trained": trained,
        "description": None if trained else "UNTRAINED random weights: for throughput benchmarks only",
        "architecture": architecture,
        "architecture_options": architecture_options,
        "labels": labels,
        "input": {
            "name": INPUT_NAME,
            "datatype": "FP32",
            "shape": [-1, channels, input_size, input_size],
            "channels": channels,
            "color": "grayscale" if channels == 1 else "RGB",
            "range": [0.0, 1.0],
            "resize": RESIZE_POLICY,
            "normalization": {"mean": mean, "std": std, "in_graph": True},
        },
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(labels)], "softmax_in_graph": True},
            {"name": BOXES, "datatype": "FP32", "shape": [-1, 4], "format": BOX_FORMAT},
        ],
        "training": training,
        "metrics": metrics,
        "onnx": {"opset": OPSET, "parity_with_torch": parity, "weights": weights},
        "files": {
            variant: {
                "file": path.name,
                "sha256": file_sha256(path),
                "bytes": path.stat().st_size,
                "metrics": variant_metrics.get(variant),
                # Derived variants are made from model.onnx by training and never committed; served when present.
                "derived": variant != "fp32",
            }
            for variant, path in files.items()
        },
        "machine": machine(),
    }


def write_card(folder: Path, card: dict) -> Path:
    path = folder / CARD_FILE
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
