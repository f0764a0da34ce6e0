"""The model contract shared by training (which writes it) and the service
(which relies on it): names, file layout, and the sha256 that binds a model
file to its card. No heavy imports, so both sides can load it."""

import hashlib
from pathlib import Path

INPUT_NAME = "images"
PROBABILITIES = "probabilities"
BOXES = "boxes"
OUTPUT_NAMES = (PROBABILITIES, BOXES)

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
# Derived variants of model.onnx in the same version folder; same inputs and outputs.
VARIANT_FILES = {"fp32": MODEL_FILE, "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}

BOX_FORMAT = "xyxy, normalized to [0, 1] of the input image"
RESIZE_POLICY = "letterbox"  # written on new cards; see letterbox.py (cards without it: stretch)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
