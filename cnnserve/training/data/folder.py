"""A user's own data: a folder of images plus ``labels.csv`` (or ``labels.json``).

Each row names one image and its single object::

    file,label,x1,y1,x2,y2[,split]
    img_0001.png,cat,12,30,140,177,train

Boxes are in the image's own pixels; labels are any strings (the class list is
their sorted set); the optional ``split`` column (train/val/test) fixes the
split, otherwise rows are split 70/15/15 from the seed. Each file is decoded and
letterboxed into the model input by the server's own ``decode_image``, and its
box follows through the same placement, so training sees what serving will.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from cnnserve.contract.images import decode_image
from cnnserve.contract.letterbox import LETTERBOX, Placement

from .digits import SPLIT_FRACTIONS

MAX_PIXELS = 1 << 31  # the user's own files: no server limit applies
REQUIRED_COLUMNS = ("file", "label", "x1", "y1", "x2", "y2")


def read_rows(root: Path) -> list[dict[str, str]]:
    csv_path, json_path = root / "labels.csv", root / "labels.json"
    if csv_path.exists():
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    elif json_path.exists():
        rows = [{k: str(v) for k, v in row.items()} for row in json.loads(json_path.read_text())]
    else:
        raise FileNotFoundError(f"{root} has neither labels.csv nor labels.json")
    if not rows:
        raise ValueError(f"{root}: no labelled images")
    missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
    if missing:
        raise ValueError(f"{root}: label file lacks column(s) {', '.join(missing)}")
    return rows


def load_image(path: Path, channels: int, size: int) -> tuple[np.ndarray, Placement]:
    """Image as float32 [C, size, size] in [0, 1] exactly as the server would fit it, and where it landed."""
    return decode_image(path.read_bytes(), channels, size, size, max_pixels=MAX_PIXELS, policy=LETTERBOX)


def load_folder(root: Path, channels: int, size: int, seed: int) -> tuple[list[str], dict[str, tuple]]:
    """Class labels and {split: (images, class ids, normalized boxes)}."""
    rows = read_rows(root)
    labels = sorted({row["label"] for row in rows})
    class_of = {label: i for i, label in enumerate(labels)}
    images, classes, boxes = [], [], []
    for row in rows:
        image, where = load_image(root / row["file"], channels, size)
        width, height = where.source
        box = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")]) / [width, height, width, height]
        images.append(image)
        classes.append(class_of[row["label"]])
        boxes.append(np.clip(where.to_input(box), 0.0, 1.0).astype(np.float32))
    if all(row.get("split") for row in rows):
        names = np.array([row["split"] for row in rows])
    else:
        names = np.empty(len(rows), dtype=object)
        order = np.random.default_rng(seed).permutation(len(rows))
        n_train = int(len(rows) * SPLIT_FRACTIONS[0])
        n_val = int(len(rows) * SPLIT_FRACTIONS[1])
        names[order[:n_train]] = "train"
        names[order[n_train : n_train + n_val]] = "val"
        names[order[n_train + n_val :]] = "test"
    images_a, classes_a, boxes_a = np.stack(images), np.asarray(classes), np.stack(boxes)
    splits = {}
    for split in ("train", "val", "test"):
        mask = names == split
        if not mask.any():
            raise ValueError(f"{root}: the {split} split is empty; add rows or a split column")
        splits[split] = (images_a[mask], classes_a[mask], boxes_a[mask])
    return labels, splits
