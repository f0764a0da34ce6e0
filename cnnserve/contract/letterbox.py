"""Image to model input, and model boxes back to the image: one home, shared by
training (which renders its data through it), the export checks and the server.

Policies (the card's ``input.resize``):
- ``letterbox`` (the default for new models): scale the image by one factor so
  it fits inside the model's H x W, centre it, and fill the rest with the mean
  colour of the scaled image's outermost rows and columns, so the padding
  continues the paper whichever the polarity. Nothing is distorted.
- ``stretch`` (cards written before letterbox): resize to H x W, aspect lost.

A ``Placement`` records where the image (or a crop of it) landed, so a box the
model gives in its input's [0, 1] coordinates maps back exactly through the
inverse: remove the padding offset, undo the scale, add the crop's origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

LETTERBOX, STRETCH = "letterbox", "stretch"
POLICIES = (LETTERBOX, STRETCH)
RESAMPLE = Image.BILINEAR  # Pillow scales its filter with the factor, so downscaling is antialiased


Region = tuple[float, float, float, float]  # (x, y, width, height) as fractions of the image
WHOLE: Region = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Placement:
    """Where one image region landed in the model's input.

    ``source``: the whole image's (width, height) in its own pixels, after EXIF orientation.
    ``region``: the part of it that was fed, as fractions of the image (``WHOLE`` by default).
    ``content``: where that region sits in the input (left, top, width, height), in input pixels.
    ``input``: the model input's (width, height).
    """

    source: tuple[int, int]
    region: Region
    content: tuple[int, int, int, int]
    input: tuple[int, int]

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes [..., 4] normalized to the input -> normalized to the whole image."""
        boxes = np.asarray(boxes, np.float64)
        (iw, ih), (left, top, cw, ch), (rx, ry, rw, rh) = self.input, self.content, self.region
        out = np.empty(boxes.shape, np.float64)
        out[..., 0::2] = (boxes[..., 0::2] * iw - left) / cw * rw + rx
        out[..., 1::2] = (boxes[..., 1::2] * ih - top) / ch * rh + ry
        return out

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """The exact inverse of ``to_source``: boxes normalized to the whole image -> to the input."""
        boxes = np.asarray(boxes, np.float64)
        (iw, ih), (left, top, cw, ch), (rx, ry, rw, rh) = self.input, self.content, self.region
        out = np.empty(boxes.shape, np.float64)
        out[..., 0::2] = ((boxes[..., 0::2] - rx) / rw * cw + left) / iw
        out[..., 1::2] = ((boxes[..., 1::2] - ry) / rh * ch + top) / ih
        return out


def placement(source: tuple[int, int], width: int, height: int, policy: str, region: Region = WHOLE) -> Placement:
    """Where ``region`` of an image of ``source`` size lands in a ``width`` x ``height`` input under ``policy``."""
    if policy == STRETCH:
        return Placement(source, region, (0, 0, width, height), (width, height))
    if policy != LETTERBOX:
        raise ValueError(f"unknown resize policy {policy!r}; known: {', '.join(POLICIES)}")
    rw, rh = region[2] * source[0], region[3] * source[1]
    scale = min(width / rw, height / rh)
    cw = min(width, max(1, round(rw * scale)))
    ch = min(height, max(1, round(rh * scale)))
    return Placement(source, region, ((width - cw) // 2, (height - ch) // 2, cw, ch), (width, height))


def border_mean(pixels: np.ndarray) -> np.ndarray:
    """Mean colour of the outermost rows and columns of an [H, W] or [H, W, C] array."""
    edges = [pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]]
    return np.concatenate([e.reshape(-1, *pixels.shape[2:]) for e in edges]).mean(axis=0, dtype=np.float64)


def fit(image: Image.Image, width: int, height: int, policy: str, region: Region = WHOLE) -> tuple[np.ndarray, Placement]:
    """``image`` (mode L or RGB; or only ``region`` of it) as uint8 [H, W] or [H, W, 3] at the input size."""
    where = placement(image.size, width, height, policy, region)
    left, top, cw, ch = where.content
    w, h = image.size
    box = None if region == WHOLE else (region[0] * w, region[1] * h, (region[0] + region[2]) * w, (region[1] + region[3]) * h)
    if image.size == (cw, ch) and box is None:
        scaled = np.asarray(image)
    else:
        scaled = np.asarray(image.resize((cw, ch), RESAMPLE, box=box))
    if (cw, ch) == (width, height):
        return scaled, where
    fill = np.rint(border_mean(scaled)).astype(np.uint8)
    out = np.empty((height, width, *scaled.shape[2:]), np.uint8)
    out[...] = fill
    out[top : top + ch, left : left + cw] = scaled
    return out, where


def to_model_input(
    image: Image.Image, channels: int, width: int, height: int, policy: str, region: Region = WHOLE
) -> tuple[np.ndarray, Placement]:
    """The model's input (float32 [C, H, W] in [0, 1]) from a decoded, oriented image."""
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    pixels, where = fit(image, width, height, policy, region)
    scaled = np.empty((channels, height, width), np.float32)
    np.multiply(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1), np.float32(1 / 255), out=scaled)
    return scaled, where
