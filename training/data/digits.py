"""The default task: digit classification + localization on a synthetic canvas.

scikit-learn ships 1,797 real 8x8 handwritten digits (no download). Each sample
scales one of them to a random size, places it at a random position on a
larger, darker, noisy canvas with faint clutter, and records the digit's label
and its tight box: the pixels whose ink is above 25% of full ink.

Splits are by source digit, so no test digit is ever seen in training, and
every rendering is a pure function of (seed, stream, index), so runs repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

INK_THRESHOLD = 0.25
LABELS = [str(d) for d in range(10)]
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)


@dataclass(frozen=True)
class CanvasSpec:
    """How samples look: canvas size, channels and the digit's size range."""

    size: int
    channels: int
    min_scale: float = 0.35
    max_scale: float = 0.9
    max_rotation: float = 0.0  # degrees; training renderings use a few for augmentation


def load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits as ink in [0, 1] (8x8 float32) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def split_indices(count: int, seed: int) -> dict[str, np.ndarray]:
    """Disjoint train/val/test index sets over the source digits."""
    order = np.random.default_rng(seed).permutation(count)
    n_train = int(count * SPLIT_FRACTIONS[0])
    n_val = int(count * SPLIT_FRACTIONS[1])
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


def ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x1, y1, x2, y2) pixel box, x2/y2 exclusive, of ink above the threshold."""
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def render_sample(digit: np.ndarray, spec: CanvasSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One canvas (float32 [C, S, S] in [0, 1]) and its normalized box (float32 [4]).

    The digit patch is scaled until its ink box is at least a few pixels wide,
    so every sample has a box.
    """
    size = spec.size
    height = int(round(rng.uniform(spec.min_scale, spec.max_scale) * size))
    width = int(round(height * rng.uniform(0.7, 1.0)))
    height, width = max(height, 8), max(width, 8)
    patch = np.asarray(Image.fromarray(digit, mode="F").resize((width, height), Image.BILINEAR))
    if spec.max_rotation:
        angle = rng.uniform(-spec.max_rotation, spec.max_rotation)
        patch = np.asarray(Image.fromarray(patch, mode="F").rotate(angle, Image.BILINEAR, expand=False))
    patch = np.clip(patch, 0.0, 1.0)
    x0 = int(rng.integers(0, size - width + 1))
    y0 = int(rng.integers(0, size - height + 1))

    ink = np.zeros((size, size), np.float32)
    ink[y0 : y0 + height, x0 : x0 + width] = patch
    x1, y1, x2, y2 = ink_box(ink)

    background = rng.uniform(0.0, 0.3)
    canvas = np.full((size, size), background, np.float32)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.integers(0, size, 2)
        half = rng.integers(1, max(2, size // 8), 2)
        canvas[max(0, cy - half[1]) : cy + half[1], max(0, cx - half[0]) : cx + half[0]] += rng.uniform(0.05, 0.2)
    canvas += rng.normal(0.0, rng.uniform(0.01, 0.06), (size, size)).astype(np.float32)

    contrast = rng.uniform(0.55, 1.0)
    if spec.channels == 1:
        image = (canvas + contrast * ink * (1.0 - background))[None]
    else:
        ink_tint = rng.uniform(0.75, 1.0, (spec.channels, 1, 1)).astype(np.float32)
        paper_tint = rng.uniform(0.8, 1.0, (spec.channels, 1, 1)).astype(np.float32)
        image = canvas[None] * paper_tint + (contrast * (1.0 - background)) * ink[None] * ink_tint
    box = np.array([x1, y1, x2, y2], np.float32) / size
    return np.clip(image, 0.0, 1.0).astype(np.float32), box


def render_split(
    digits: np.ndarray, indices: np.ndarray, spec: CanvasSpec, seed: int, stream: int, copies: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render ``copies`` samples of each digit in ``indices``.

    ``stream`` separates the random draws of different uses (each training
    epoch, validation, test) made from one seed.
    """
    images, boxes, order = [], [], []
    for copy in range(copies):
        for index in indices:
            rng = np.random.default_rng([seed, stream, copy, int(index)])
            image, box = render_sample(digits[index], spec, rng)
            images.append(image)
            boxes.append(box)
            order.append(index)
    return np.stack(images), np.stack(boxes), np.asarray(order)
