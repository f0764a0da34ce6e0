"""Model outputs to answers: top-k labels and the box in the caller's pixels.

One home for this, shared by every protocol that answers with labels.
"""

from __future__ import annotations

import numpy as np


def ordered_corners(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] boxes with x1 <= x2 and y1 <= y2: a box regressor trained with an order-free loss may swap them.
    One sort of the (x, y) pairs: 1.4 µs for a request's box, where minimum, maximum and concatenate took 2.5."""
    return np.sort(boxes.reshape(-1, 2, 2), axis=1).reshape(-1, 4)


def box_in_pixels(box: np.ndarray, width: int, height: int) -> tuple[dict, dict]:
    """Corners ordered and clipped to the image; returns (pixels, normalized).

    Plain Python floats throughout: ``round`` on numpy scalars cost 29 µs a box.
    """
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in box.tolist())
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    normalized = {"x1": round(x1, 5), "y1": round(y1, 5), "x2": round(x2, 5), "y2": round(y2, 5)}
    pixels = {
        "x1": round(x1 * width, 2),
        "y1": round(y1 * height, 2),
        "x2": round(x2 * width, 2),
        "y2": round(y2 * height, 2),
    }
    return pixels, normalized


def describe(
    probabilities: np.ndarray, box: np.ndarray | None, labels: list[str], top_k: int, size: tuple[int, int]
) -> dict:
    """One image's answer; ``box`` is None for a classification-only model."""
    k = min(top_k, len(probabilities))
    best = np.argsort(-probabilities, kind="stable")[:k].tolist()
    values = probabilities.tolist()
    answer = {
        "label": labels[best[0]],
        "class_index": best[0],
        "probability": round(values[best[0]], 6),
        "top_k": [{"label": labels[i], "probability": round(values[i], 6)} for i in best],
        "image_size": {"width": size[0], "height": size[1]},
    }
    if box is None:
        answer.update(box=None, box_normalized=None, note="this model has no box output")
    else:
        answer["box"], answer["box_normalized"] = box_in_pixels(box, *size)
    return answer
