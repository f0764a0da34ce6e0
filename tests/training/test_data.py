"""The digits task is deterministic, split by source digit, covers the pictures
users send, and reaches the model exactly as the server would fit the same
picture; its boxes are the tight boxes around the ink; the folder format reads
a user's own data."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnserve.contract.images import decode_image
from cnnserve.training.data import digits_task, folder_task
from cnnserve.training.data.digits import (
    PageSpec,
    ink_box,
    load_source_digits,
    render_page,
    render_sample,
    split_indices,
)


def test_splits_are_disjoint_and_cover_every_source_digit():
    splits = split_indices(1797, seed=0)
    train, val, test = (set(splits[k].tolist()) for k in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 1797


def test_rendering_is_deterministic_from_the_seed():
    a = digits_task(3, 64, seed=5, copies_per_epoch=1, limit=10)
    b = digits_task(3, 64, seed=5, copies_per_epoch=1, limit=10)
    for x, y in zip(a.train_epoch(2), b.train_epoch(2)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train_epoch(2)[0], a.train_epoch(3)[0]), "each epoch renders new placements"


@pytest.mark.parametrize(("channels", "size"), [(1, 32), (3, 64)])
def test_samples_are_in_range_with_the_right_shape(channels, size):
    images, classes, boxes = digits_task(channels, size, seed=0, copies_per_epoch=1, limit=30).split("test")
    assert images.shape == (len(classes), channels, size, size) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_box_is_the_tight_box_of_ink_above_a_quarter():
    ink = np.zeros((10, 10), np.float32)
    ink[2:5, 3:8] = 1.0
    ink[8, 8] = 0.2  # faint ink below the threshold is not part of the digit
    assert ink_box(ink) == (3, 2, 8, 5)


def test_training_inputs_are_what_the_server_makes_of_the_same_picture():
    """Same function, same pixels: a training sample equals the server's decoding of its picture as a PNG file."""
    digits, _ = load_source_digits()
    for channels, size in ((1, 32), (3, 64)):
        spec = PageSpec(size, channels)
        for i, digit in enumerate(digits[:12]):
            picture, box = render_page(digit, spec, np.random.default_rng([7, i]))
            trained, trained_box = render_sample(digit, spec, np.random.default_rng([7, i]))
            file = io.BytesIO()
            picture.save(file, format="PNG")
            served, where = decode_image(file.getvalue(), channels, size, size, 10**7)
            np.testing.assert_array_equal(trained, served)
            np.testing.assert_allclose(where.to_source(trained_box), box, atol=1e-6)


def test_pictures_cover_both_polarities_and_every_shape():
    digits, _ = load_source_digits()
    spec = PageSpec(64, 3)
    aspects, dark_ink = [], []
    for i in range(200):
        picture, box = render_page(digits[i], spec, np.random.default_rng([3, i]))
        width, height = picture.size
        aspects.append(width / height)
        grey = np.asarray(picture.convert("L"), np.float32)
        x1, y1, x2, y2 = (box * [width, height, width, height]).round().astype(int)
        dark_ink.append(grey[y1:y2, x1:x2].mean() < np.median(grey))
    assert min(aspects) < 1 / 3 and max(aspects) > 3, "from about 1:4 to 4:1"
    assert 0.35 < np.mean(dark_ink) < 0.65, "dark on light and light on dark in similar shares"


def test_tight_crops_are_near_square_with_a_large_digit():
    digits, _ = load_source_digits()
    spec = PageSpec(48, 3, tight_crop_share=1.0)
    for i in range(40):
        picture, box = render_page(digits[i], spec, np.random.default_rng([4, i]))
        width, height = picture.size
        assert max(width, height) / min(width, height) <= 4 / 3 + 0.02
        ink_height = (box[3] - box[1]) * height
        assert ink_height > 0.45 * min(width, height), "the digit's ink fills most of the short side"


def test_tight_crops_change_training_pages_only():
    """A recipe's page overrides shape what it learns from; validation and test keep the default pictures, so
    every version's card is measured on the same ones."""
    plain = digits_task(1, 32, seed=0, copies_per_epoch=1, limit=8)
    tight = digits_task(1, 32, seed=0, copies_per_epoch=1, limit=8, train_pages={"tight_crop_share": 0.5})
    for split in ("val", "test"):
        np.testing.assert_array_equal(plain.split(split)[0], tight.split(split)[0])
    assert not np.array_equal(plain.train_epoch(1)[0], tight.train_epoch(1)[0])
    assert "tight crops" in tight.description and "tight crops" not in plain.description


def write_folder(root, rows, as_json=False):
    for row in rows:
        Image.new("RGB", (40, 20), (200, 10, 10)).save(root / row["file"])
    if as_json:
        (root / "labels.json").write_text(json.dumps(rows))
    else:
        with (root / "labels.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


@pytest.mark.parametrize("as_json", [False, True])
def test_folder_format_normalizes_boxes_and_uses_the_split_column(tmp_path, as_json):
    rows = [
        {"file": f"{i}.png", "label": "cat" if i % 2 else "dog", "x1": 4, "y1": 2, "x2": 20, "y2": 10,
         "split": ["train", "val", "test"][i % 3]}
        for i in range(6)
    ]
    write_folder(tmp_path, rows, as_json)
    task = folder_task(tmp_path, channels=3, input_size=16, seed=0)
    assert task.labels == ["cat", "dog"]
    images, classes, boxes = task.split("test")
    assert images.shape == (2, 3, 16, 16)
    # 40x20 letterboxed into 16x16: content 16x8 at y 4, so the box's y maps into 0.25..0.75 of the input.
    np.testing.assert_allclose(boxes[0], [0.1, 0.3, 0.5, 0.5])
    assert task.train_epoch(0)[0].shape[0] == 2


def test_folder_without_box_columns_is_refused_with_the_column_named(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\na.png,cat\n")
    with pytest.raises(ValueError, match="x1"):
        folder_task(tmp_path, channels=1, input_size=16, seed=0)
