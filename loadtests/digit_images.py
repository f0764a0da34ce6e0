"""Digit pictures with known answers, written as real image files at their own
sizes, for the robustness suite, tests, load tests and benchmarks.

This code shares nothing with the training renderer (``cnnserve/training/data/digits.py``)
but the bundled source digits and the split: its own stroke rendering (bicubic
with a stroke-weight curve, not bilinear), its own paper (a low-frequency
texture and grain, not a tilt and flat noise), its own placement (inside a
margin), lighting (a radial falloff from an off-centre point), rotation
(bicubic) and encoders (PNG, JPEG at a condition's quality, WebP, EXIF
orientation tags). Nothing is rendered at the model's size: each file has the
size and aspect ratio its condition draws, and the server has to fit it.

The true box is the tight box of the pixels whose ink is above a quarter of
full ink, in the picture as a viewer shows it (after EXIF orientation).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cnnserve.training.data.digits import load_source_digits, split_indices

INK_THRESHOLD = 0.25
EXIF_ORIENTATION = 0x0112
# What a viewer does for each EXIF orientation is undone here to store the pixels the way a camera would.
STORED_FOR_ORIENTATION = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@dataclass(frozen=True)
class Condition:
    """One kind of picture: its shape, the digit's size, colours, light and how it is encoded."""

    name: str
    description: str
    aspects: tuple[float, float]  # long side / short side, drawn log-uniformly (1: square)
    short_side: tuple[int, int]  # pixels
    digit: tuple[float, float]  # digit height as a share of the short side
    polarity: str  # "light-on-dark", "dark-on-light" or "either"
    coloured: bool = False
    photo: bool = False  # radial light, a tilt, paper texture, sometimes an EXIF orientation tag
    formats: tuple[tuple[str, int], ...] = (("PNG", 0), ("JPEG", 92), ("WEBP", 90))  # (format, quality)

    @property
    def digit_spans_fifth_of_long_side(self) -> bool:
        """Whether every digit covers at least 20% of the picture's long side (LeNet-5's bar applies)."""
        return self.digit[0] / self.aspects[1] >= 0.2


CONDITIONS = [
    Condition("square", "1:1, light ink on dark paper, digit 45-85% of the side (like the old training canvases)",
              (1.0, 1.0), (96, 400), (0.45, 0.85), "light-on-dark"),
    Condition("4:3 and 16:9", "4:3 or 16:9 either way up, either polarity, digit 40-75% of the short side",
              (4 / 3, 16 / 9), (120, 480), (0.40, 0.75), "either"),
    Condition("2:1 to 4:1", "2:1 to 4:1 either way up, either polarity, digit 50-90% of the short side",
              (2.0, 4.0), (80, 240), (0.50, 0.90), "either"),
    Condition("small digit", "1:1 to 4:3, either polarity, digit 15-30% of the short side",
              (1.0, 4 / 3), (240, 640), (0.15, 0.30), "either"),
    Condition("dark on light", "1:1 to 5:4, dark ink on white paper (how people write), digit 35-80%",
              (1.0, 1.25), (100, 400), (0.35, 0.80), "dark-on-light"),
    Condition("photo-like", "a 4:3 photo of a page (640x480 to 1600x1200), dark ink, digit 20-60% of the short "
              "side, uneven light, tilted up to 8 degrees, JPEG, a third with an EXIF orientation tag",
              (4 / 3, 4 / 3), (480, 1200), (0.20, 0.60), "dark-on-light", photo=True,
              formats=(("JPEG", 85), ("JPEG", 90))),
    Condition("low-quality JPEG", "1:1 to 16:9, either polarity, digit 40-75%, JPEG quality 8-25",
              (1.0, 16 / 9), (96, 320), (0.40, 0.75), "either", formats=(("JPEG", 8), ("JPEG", 15), ("JPEG", 25))),
    Condition("coloured paper", "1:1 to 16:9, coloured paper and ink of any hue, either polarity, digit 40-75%",
              (1.0, 16 / 9), (96, 400), (0.40, 0.75), "either", coloured=True),
    # Last, so the conditions before it keep their pictures (each picture's seed includes its condition's index).
    Condition("tight crop", "1:1 to 5:4, either polarity, the picture cropped close around the digit: digit 80-94% "
              "of the short side", (1.0, 1.25), (64, 320), (0.80, 0.94), "either"),
]
CONDITIONS_BY_NAME = {c.name: c for c in CONDITIONS}


@dataclass(frozen=True)
class DigitFile:
    data: bytes
    label: int
    box: np.ndarray  # (x1, y1, x2, y2) in the picture's own pixels, as a viewer shows it
    format: str
    size: tuple[int, int] = (0, 0)  # (width, height) as a viewer shows it


def stroke(digit: np.ndarray, width: int, height: int, weight: float) -> np.ndarray:
    """The 8x8 digit as ink in [0, 1] at ``width`` x ``height``: bicubic, then a stroke-weight curve."""
    ink = np.asarray(Image.fromarray(digit, mode="F").resize((width, height), Image.BICUBIC))
    return np.clip(ink, 0.0, 1.0) ** weight


def paper_texture(width: int, height: int, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Low-frequency unevenness plus grain, around 0 ([H, W])."""
    coarse = Image.fromarray(rng.normal(0, 1, (6, 6)).astype(np.float32), mode="F")
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC))
    return amount * smooth + rng.normal(0, amount / 2, (height, width))


def radial_light(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness falling off from an off-centre point, as under a desk lamp ([H, W], at most 1)."""
    cx, cy = rng.uniform(-0.2, 1.2) * width, rng.uniform(-0.2, 1.2) * height
    ys, xs = np.ogrid[0:height, 0:width]
    distance = np.hypot(xs - cx, ys - cy) / math.hypot(width, height)
    return 1.0 - rng.uniform(0.2, 0.45) * distance


def luminance(rgb: np.ndarray) -> float:
    return float(rgb @ [0.299, 0.587, 0.114])


def pick_colours(condition: Condition, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(paper, ink) RGB in [0, 1] for the condition's polarity, at least 0.4 apart in luminance."""
    polarity = condition.polarity
    if polarity == "either":
        polarity = "dark-on-light" if rng.random() < 0.5 else "light-on-dark"
    while True:
        if condition.coloured:
            paper, ink = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        elif polarity == "dark-on-light":
            paper = np.full(3, rng.uniform(0.75, 1.0)) - [0, rng.uniform(0, 0.04), rng.uniform(0, 0.1)]
            ink = np.full(3, rng.uniform(0.0, 0.25)) + [0, 0, rng.uniform(0, 0.3)]  # pencil to blue biro
        else:
            paper = np.full(3, rng.uniform(0.0, 0.25))
            ink = np.full(3, rng.uniform(0.75, 1.0))
        gap = luminance(ink) - luminance(paper)
        if abs(gap) >= 0.4 and (condition.polarity != "dark-on-light" or gap < 0):
            return np.clip(paper, 0, 1), np.clip(ink, 0, 1)


def render(digit: np.ndarray, label: int, condition: Condition, rng: np.random.Generator, index: int) -> DigitFile:
    """One picture of ``digit`` under ``condition``, encoded as a file."""
    aspect = math.exp(rng.uniform(math.log(condition.aspects[0]), math.log(condition.aspects[1])))
    short = int(rng.integers(condition.short_side[0], condition.short_side[1] + 1))
    long = int(round(short * aspect))
    width, height = (long, short) if rng.random() < 0.5 else (short, long)

    digit_h = int(round(rng.uniform(*condition.digit) * short))
    digit_w = int(round(digit_h * rng.uniform(0.65, 0.9)))
    ink = stroke(digit, digit_w, digit_h, weight=rng.uniform(0.6, 1.3))
    if condition.photo:
        ink = np.asarray(Image.fromarray(ink, mode="F").rotate(rng.uniform(-8, 8), Image.BICUBIC, expand=True))
        ink = np.clip(ink, 0.0, 1.0)
    ih, iw = ink.shape
    margin = max(2, int(0.03 * short))
    x0 = int(rng.integers(margin, max(margin + 1, width - iw - margin + 1)))
    y0 = int(rng.integers(margin, max(margin + 1, height - ih - margin + 1)))
    alpha = np.zeros((height, width), np.float32)
    alpha[y0 : y0 + ih, x0 : x0 + iw] = ink[: height - y0, : width - x0]
    rows = np.flatnonzero((alpha > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((alpha > INK_THRESHOLD).any(axis=0))
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)

    paper, ink_colour = pick_colours(condition, rng)
    texture = paper_texture(width, height, rng, 0.04 if condition.photo else 0.015)
    page = paper + texture[..., None] * [1.0, 1.0, 1.0]
    strength = rng.uniform(0.8, 1.0)
    page = page * (1 - strength * alpha[..., None]) + ink_colour * (strength * alpha[..., None])
    if condition.photo:
        page = page * radial_light(width, height, rng)[..., None]
    pixels = (np.clip(page, 0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels, "RGB")

    fmt, quality = condition.formats[index % len(condition.formats)]
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if condition.photo and index % 3 == 0:
        orientation = (6, 8, 3)[(index // 3) % 3]
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        picture = picture.transpose(STORED_FOR_ORIENTATION[orientation])
        options["exif"] = exif
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return DigitFile(buffer.getvalue(), label, box, fmt, (width, height))


def condition_files(condition: Condition, count: int | None = None, seed: int = 0) -> list[DigitFile]:
    """One picture of each of the first ``count`` test-split digits (all 271 by default) under ``condition``."""
    digits, labels = load_source_digits()
    test = split_indices(len(digits), seed=0)["test"]
    chosen = test if count is None else test[:count]
    files = []
    for i, index in enumerate(chosen):
        rng = np.random.default_rng([seed, CONDITIONS.index(condition), int(index)])
        files.append(render(digits[index], int(labels[index]), condition, rng, i))
    return files


# Load tests count a wrong label as a failure: clear pictures, so a gate measures the serving path, not accuracy
# (the robustness suite measures accuracy).
ASSORTED = Condition("assorted", "square to 4:3, light on dark, digit 70-92%", (1.0, 4 / 3), (64, 320),
                     (0.70, 0.92), "light-on-dark", formats=(("PNG", 0), ("JPEG", 92), ("WEBP", 90), ("BMP", 0)))


def digit_files(channels: int, size: int, count: int, seed: int = 0, assorted: bool = False) -> list[DigitFile]:
    """``count`` test-split digits as files, for tests and load: square ``size`` x ``size`` light-on-dark PNGs
    with the digit at 70-92% of the side (large enough that the server needs no second look), or with
    ``assorted`` pictures of assorted shapes, sizes, polarities and formats (``ASSORTED``).

    ``channels`` says what the model takes; grayscale models get grayscale files.
    """
    digits, labels = load_source_digits()
    test = split_indices(len(digits), seed=0)["test"]
    rng = np.random.default_rng(seed)
    condition = ASSORTED if assorted else Condition(
        "canvas", "", (1.0, 1.0), (size, size), (0.70, 0.92), "light-on-dark", formats=(("PNG", 0),)
    )
    files = []
    for i in range(count):
        index = int(test[rng.integers(len(test))])
        file = render(digits[index], int(labels[index]), condition, rng, i)
        if channels == 1 and file.format == "PNG" and not assorted:
            grey = io.BytesIO()
            Image.open(io.BytesIO(file.data)).convert("L").save(grey, format="PNG")
            file = DigitFile(grey.getvalue(), file.label, file.box, file.format, file.size)
        files.append(file)
    return files
