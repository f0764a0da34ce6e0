"""Training data sources behind one interface, ``TaskData``.

The training loop asks for a fresh training set each epoch (the digits task
renders new placements every epoch; a folder returns the same images) and for
the fixed validation and test splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .digits import LABELS, PageSpec, load_source_digits, render_split, split_indices
from .folder import load_folder

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # images, class ids, normalized boxes
TRAIN_STREAM_BASE, VAL_STREAM, TEST_STREAM = 1000, 1, 2


@dataclass
class TaskData:
    labels: list[str]
    channels: int
    input_size: int
    description: str
    _digits: tuple | None = None
    _fixed: dict[str, Arrays] = field(default_factory=dict)
    seed: int = 0
    copies_per_epoch: int = 4
    train_pages: dict = field(default_factory=dict)  # PageSpec overrides for training renderings only

    def train_epoch(self, epoch: int) -> Arrays:
        """A fresh rendering each epoch; epoch 0 is kept, as it also gives the
        normalization statistics and the INT8 calibration images."""
        if self._digits is None:
            return self._fixed["train"]
        if epoch == 0 and "train-0" in self._fixed:
            return self._fixed["train-0"]
        arrays = self._render("train", TRAIN_STREAM_BASE + epoch, self.copies_per_epoch)
        if epoch == 0:
            self._fixed["train-0"] = arrays
        return arrays

    def split(self, name: str) -> Arrays:
        if name not in self._fixed:
            stream = VAL_STREAM if name == "val" else TEST_STREAM
            self._fixed[name] = self._render(name, stream, copies=3)
        return self._fixed[name]

    def _render(self, split: str, stream: int, copies: int) -> Arrays:
        digits, targets, indices = self._digits
        # Validation and test keep the default pages, so every version's card is measured on the same pictures.
        spec = PageSpec(self.input_size, self.channels, **(self.train_pages if split == "train" else {}))
        images, boxes, order = render_split(digits, indices[split], spec, self.seed, stream, copies)
        return images, targets[order], boxes


def digits_task(channels: int, input_size: int, seed: int, copies_per_epoch: int, limit: int | None = None,
                train_pages: dict | None = None) -> TaskData:
    """The default task; ``limit`` keeps only the first digits of each split (dry runs); ``train_pages``
    overrides ``PageSpec`` fields for the training renderings."""
    digits, targets = load_source_digits()
    indices = split_indices(len(digits), seed)
    if limit is not None:
        indices = {name: idx[:limit] for name, idx in indices.items()}
    description = (
        f"scikit-learn digits ({len(indices['train'])}/{len(indices['val'])}/{len(indices['test'])} "
        f"source digits train/val/test, split by source digit) written on pages of aspect 1:4 to 4:1 at "
        f"10-90% of the short side, either polarity, grey or coloured, with uneven light, clutter, noise, blur "
        f"and JPEG{tight_crops(train_pages)}, letterboxed into {input_size}x{input_size} "
        f"{'grayscale' if channels == 1 else 'RGB'}; "
        f"{copies_per_epoch} new renderings of each training digit per epoch, 3 fixed renderings per val/test digit"
    )
    return TaskData(
        LABELS, channels, input_size, description, (digits, targets, indices), seed=seed,
        copies_per_epoch=copies_per_epoch, train_pages=dict(train_pages or {}),
    )


def tight_crops(train_pages: dict | None) -> str:
    """The data description's words for a recipe's tight crops (none without them)."""
    share = (train_pages or {}).get("tight_crop_share", 0.0)
    return f" ({share:.0%} of training pages tight crops: near-square, digit 60-95% of the side)" if share else ""


def card_test_split(card: dict) -> Arrays:
    """The test split a digits model's card figures were measured on: images, classes and boxes."""
    channels, size = card["input"]["channels"], card["input"]["shape"][-1]
    return digits_task(channels, size, seed=card["training"]["seed"], copies_per_epoch=1).split("test")


def folder_task(root: Path, channels: int, input_size: int, seed: int) -> TaskData:
    labels, splits = load_folder(root, channels, input_size, seed)
    sizes = "/".join(str(len(splits[s][0])) for s in ("train", "val", "test"))
    return TaskData(labels, channels, input_size, f"folder {root} ({sizes} images train/val/test)", _fixed=splits, seed=seed)
