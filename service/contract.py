"""The model contract shared by training (which writes it) and the service
(which relies on it). Plain constants, no heavy imports, so both sides can
load it."""

INPUT_NAME = "images"
PROBABILITIES = "probabilities"
BOXES = "boxes"
OUTPUT_NAMES = (PROBABILITIES, BOXES)

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
# Derived variants of model.onnx in the same version folder; same inputs and outputs.
VARIANT_FILES = {"fp32": MODEL_FILE, "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}

BOX_FORMAT = "xyxy, normalized to [0, 1] of the input image"
RESIZE_POLICY = "stretch"
