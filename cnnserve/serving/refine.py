"""The zoom-in pass: a second look at digits that reach the model as a few pixels.

A digit covering a small part of a large or elongated picture keeps only a few
pixels once the picture is fitted into the model's input (a 4:1 photo fills a
quarter of a square input). When the first pass's box spans less than
``zoom_in_below`` of the input's side, the server decodes the region around
that box again from the original file, at the model's resolution, and runs the
model on it through the same batcher; the answer (label, probabilities and
box) is the second pass's, mapped back to the whole image. Measured costs and
gains: docs/architecture.md ("The zoom-in pass").
"""

from __future__ import annotations

import numpy as np

from ..contract.letterbox import Region

ZOOM_MARGIN = 1.6  # the region's side over the first box's longer side: the digit plus context around it


def needs_zoom(input_box: np.ndarray, below: float) -> bool:
    """Whether a box (normalized to the model input, corners ordered) is small enough to look again."""
    x1, y1, x2, y2 = input_box.tolist()
    return max(x2 - x1, y2 - y1) < below


def zoom_region(source_box: np.ndarray, size: tuple[int, int]) -> Region:
    """A square region (in the image's pixels) around a box normalized to the image (corners ordered, as
    ``InferenceCore.run`` gives them), kept inside the image.

    Where the image is narrower than the square (a digit filling the short side of
    a wide picture) the region takes the image's whole extent on that axis.
    """
    width, height = size
    x1, y1, x2, y2 = (np.clip(source_box, 0.0, 1.0) * [width, height, width, height]).tolist()
    side = max(ZOOM_MARGIN * max(x2 - x1, y2 - y1), 4.0)
    spans = []
    for low, high, extent in ((x1, x2, width), (y1, y2, height)):
        span = min(side, extent)
        start = min(max((low + high - span) / 2, 0.0), extent - span)
        spans.append((start / extent, span / extent))
    (rx, rw), (ry, rh) = spans
    return rx, ry, rw, rh
