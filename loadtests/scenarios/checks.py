"""What a correct answer looks like, for every protocol.

Each check raises ``WrongAnswer`` naming the first thing wrong; the users turn
it into a Locust failure, so a wrong label, a malformed box or body, or a
wrong output name, shape or datatype counts against the run like an error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .samples import KnownFile
from .target import ModelTarget

PROBABILITY_SUM_TOLERANCE = 1e-3
BOX_KEYS = ("x1", "y1", "x2", "y2")


class WrongAnswer(Exception):
    """The server answered, but not correctly."""


class Output(NamedTuple):
    """One V2 output tensor as received."""

    datatype: str
    shape: list[int]
    array: np.ndarray


def require(condition: bool, message: str) -> None:
    if not condition:
        raise WrongAnswer(message)


def field(answer: dict, key: str, kind: type | tuple[type, ...], where: str):
    value = answer.get(key) if isinstance(answer, dict) else None
    require(isinstance(value, kind) and not isinstance(value, bool), f"{where}: {key!r} missing or not {kind}")
    return value


def check_box(box, where: str, width: float = 1.0, height: float = 1.0) -> None:
    """Four numbers inside the image (normalized: width = height = 1), corners ordered."""
    require(isinstance(box, dict) and set(BOX_KEYS) <= set(box), f"{where}: not a box with {', '.join(BOX_KEYS)}")
    x1, y1, x2, y2 = (box[k] for k in BOX_KEYS)
    require(
        all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (x1, y1, x2, y2)),
        f"{where}: coordinates are not finite numbers: {box}",
    )
    require(0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, f"{where}: {box} not ordered within {width}x{height}")


def check_prediction(answer: dict, expected: KnownFile, target: ModelTarget, where: str) -> None:
    """One image's answer from /predict or /predict_batch: label, top-k, image size and box."""
    top_k = field(answer, "top_k", list, where)
    require(len(top_k) == len(target.labels), f"{where}: {len(top_k)} entries in top_k, asked for {len(target.labels)}")
    labels = [field(entry, "label", str, f"{where} top_k") for entry in top_k]
    probabilities = [field(entry, "probability", (int, float), f"{where} top_k") for entry in top_k]
    require(sorted(labels) == sorted(target.labels), f"{where}: top_k labels {labels} are not the model's labels")
    require(all(0 <= p <= 1 for p in probabilities), f"{where}: probabilities outside [0, 1]: {probabilities}")
    require(probabilities == sorted(probabilities, reverse=True), f"{where}: top_k not in descending order")
    total = sum(probabilities)
    require(abs(total - 1) <= PROBABILITY_SUM_TOLERANCE, f"{where}: probabilities sum to {total:.6f}, not 1")
    label = field(answer, "label", str, where)
    require(label == str(expected.digit), f"{where}: wrong label {label!r} for a {expected.digit}")
    require(label == labels[0], f"{where}: label {label!r} is not top_k's first, {labels[0]!r}")
    class_index = field(answer, "class_index", int, where)
    require(class_index == target.class_index(expected.digit), f"{where}: wrong class_index {class_index}")
    require(field(answer, "probability", (int, float), where) == probabilities[0], f"{where}: probability != top_k[0]")
    size = field(answer, "image_size", dict, where)
    require(
        size == {"width": expected.width, "height": expected.height},
        f"{where}: image_size {size}, the file is {expected.width}x{expected.height}",
    )
    if not target.has_boxes:
        require(answer.get("box") is None, f"{where}: a box from a model without a box output")
        return
    normalized = field(answer, "box_normalized", dict, where)
    check_box(normalized, f"{where} box_normalized")
    pixels = field(answer, "box", dict, where)
    check_box(pixels, f"{where} box", expected.width, expected.height)
    for key in BOX_KEYS:
        side = expected.width if key.startswith("x") else expected.height
        require(
            math.isclose(pixels[key], normalized[key] * side, abs_tol=0.01 + 1e-5 * side),
            f"{where}: box {pixels} is not box_normalized {normalized} in pixels",
        )


def check_predict(answer: dict, expected: KnownFile, target: ModelTarget) -> None:
    """The body of POST /predict."""
    require(isinstance(answer, dict), "the body is not a JSON object")
    check_model(answer.get("model"), answer.get("version"), target)
    check_prediction(answer, expected, target, "answer")


def check_predict_batch(answer: dict, expected: list[KnownFile], target: ModelTarget) -> None:
    """The body of POST /predict_batch: one prediction per file, in order."""
    require(isinstance(answer, dict), "the body is not a JSON object")
    check_model(answer.get("model"), answer.get("version"), target)
    predictions = field(answer, "predictions", list, "answer")
    require(len(predictions) == len(expected), f"{len(predictions)} predictions for {len(expected)} files")
    for index, (prediction, known) in enumerate(zip(predictions, expected)):
        check_prediction(prediction, known, target, f"predictions[{index}]")


def check_model(name, version, target: ModelTarget) -> None:
    require(name == target.name, f"answered by model {name!r}, asked {target.name!r}")
    if target.later_versions:
        require(str(version).isdigit() and int(version) >= target.version,
                f"answered by version {version!r}, expected {target.version} or later")
    else:
        require(str(version) == str(target.version), f"answered by version {version!r}, expected {target.version}")


def check_v2_outputs(outputs: dict[str, Output], digits: list[int], target: ModelTarget) -> None:
    """V2 outputs for a batch of known digits: names, datatypes, shapes, then values."""
    expected_names = {"probabilities", "boxes"} if target.has_boxes else {"probabilities"}
    require(set(outputs) == expected_names, f"outputs {sorted(outputs)}, expected {sorted(expected_names)}")
    count = len(digits)
    expected_shapes = {"probabilities": [count, len(target.labels)], "boxes": [count, 4]}
    for name, output in outputs.items():
        require(output.datatype == "FP32", f"output {name!r} is {output.datatype}, expected FP32")
        require(output.shape == expected_shapes[name], f"output {name!r} has shape {output.shape}, "
                                                       f"expected {expected_shapes[name]}")
        require(output.array.shape == tuple(output.shape), f"output {name!r}: data does not fill shape {output.shape}")
        require(bool(np.isfinite(output.array).all()), f"output {name!r} has NaN or infinite values")
    probabilities = outputs["probabilities"].array
    require(bool(((probabilities >= 0) & (probabilities <= 1)).all()), "probabilities outside [0, 1]")
    sums = probabilities.sum(axis=1)
    require(bool((np.abs(sums - 1) <= PROBABILITY_SUM_TOLERANCE).all()), f"probabilities sum to {sums.round(6)}, not 1")
    predicted = probabilities.argmax(axis=1).tolist()
    expected = [target.class_index(d) for d in digits]
    require(predicted == expected, f"wrong labels: class indices {predicted} for digits {digits}")
    if target.has_boxes:
        for row, box in enumerate(outputs["boxes"].array.tolist()):
            check_box(dict(zip(BOX_KEYS, box)), f"boxes[{row}]")
