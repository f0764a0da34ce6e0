"""Encoded digit images with known answers, for tests, load tests and benchmarks.

Test-split digits (never seen in training) are rendered by the training data
generator; with ``assorted`` each is also rescaled to a random size and saved
in a rotating choice of formats and modes, as real clients would send them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.data.digits import CanvasSpec, load_source_digits, render_sample, split_indices

ASSORTED_FORMATS = [("PNG", None), ("JPEG", None), ("PNG", "RGBA"), ("WEBP", None), ("PNG", "L"), ("BMP", None)]


@dataclass(frozen=True)
class DigitFile:
    data: bytes
    label: int
    box: np.ndarray  # (x1, y1, x2, y2) in the file's own pixels
    format: str


def digit_files(channels: int, size: int, count: int, seed: int = 0, assorted: bool = False) -> list[DigitFile]:
    digits, labels = load_source_digits()
    test = split_indices(len(digits), seed=0)["test"]
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        index = int(test[rng.integers(len(test))])
        canvas, box = render_sample(digits[index], CanvasSpec(size, channels), rng)
        pixels = (canvas.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
        fmt, mode = ASSORTED_FORMATS[i % len(ASSORTED_FORMATS)] if assorted else ("PNG", None)
        if assorted:
            image = image.resize((int(rng.integers(size, 5 * size)), int(rng.integers(size, 5 * size))), Image.BILINEAR)
        if mode:
            image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
        width, height = image.size
        files.append(DigitFile(buffer.getvalue(), int(labels[index]), box * [width, height, width, height], fmt))
    return files
