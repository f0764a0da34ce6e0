"""The robustness suite: its pictures are real files at their own sizes and shapes,
and the committed models hold their bar on every condition through a real server."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from loadtests.accuracy import judged, missed, run_suite, table
from loadtests.digit_images import CONDITIONS, condition_files

SUITE_DIGITS = 50  # per condition in CI; `python -m loadtests.accuracy` runs all 271
SLACK = 0.05  # the bar minus this, for a 50-digit sample (the full suite holds the bar itself)


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: c.name)
def test_pictures_have_the_conditions_shape_and_a_box_on_the_digit(condition):
    for file in condition_files(condition, count=6):
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(file.data)))
        assert image.size == file.size
        width, height = file.size
        aspect = max(width, height) / min(width, height)
        assert condition.aspects[0] - 0.02 <= aspect <= condition.aspects[1] + 0.02
        x1, y1, x2, y2 = file.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        grey = np.asarray(image.convert("L"), np.float32)
        inside, outside = grey[int(y1) : int(y2), int(x1) : int(x2)], np.median(grey)
        assert np.abs(inside - outside).max() > 60, "the ink is inside the box"


def test_committed_models_hold_their_bar_on_every_condition(server):
    results = run_suite(server.url, SUITE_DIGITS, log=lambda line: None)
    print("\n" + table(results))
    for name, entry in results["models"].items():
        for condition in CONDITIONS:
            bar = judged(name, condition)
            row = entry["conditions"][condition.name]
            assert row["images"] == SUITE_DIGITS
            if bar:
                assert row["accuracy"] >= bar[0] - SLACK and row["mean_iou"] >= bar[1] - SLACK, (
                    f"{name} on {condition.name}: {row}; all misses: {missed(results)}"
                )


def test_a_finer_comparison_draws_each_digit_afresh_per_rendering(server):
    """``--renderings 3 --condition square``: three different pictures of each digit, one condition in the table."""
    square = next(c for c in CONDITIONS if c.name == "square")
    first, again = condition_files(square, count=3, seed=0), condition_files(square, count=3, seed=1)
    assert [f.label for f in first] == [f.label for f in again] and all(a.data != b.data for a, b in zip(first, again))
    results = run_suite(server.url, 3, ["lenet5-digits"], log=lambda line: None, conditions=[square], renderings=2)
    assert results["models"]["lenet5-digits"]["conditions"]["square"]["images"] == 6
    assert table(results).count("\n| ") == 1  # the header's separator, then the one condition
