"""The zoom-in pass: which boxes get a second look, and the region it decodes."""

import numpy as np
import pytest

from cnnserve.serving.refine import ZOOM_MARGIN, needs_zoom, zoom_region


def test_only_boxes_small_in_the_input_are_looked_at_again():
    assert needs_zoom(np.array([0.4, 0.4, 0.6, 0.7]), below=0.5)
    assert not needs_zoom(np.array([0.2, 0.1, 0.5, 0.8]), below=0.5)
    assert not needs_zoom(np.array([0.4, 0.4, 0.6, 0.7]), below=0.0), "0 turns the pass off"


def test_region_is_a_square_around_the_box_with_margin():
    x, y, w, h = zoom_region(np.array([0.45, 0.40, 0.55, 0.60]), (1000, 1000))
    side = ZOOM_MARGIN * 200
    assert (w * 1000, h * 1000) == pytest.approx((side, side))
    assert (x + w / 2, y + h / 2) == pytest.approx((0.5, 0.5))


def test_region_stays_inside_the_image():
    x, y, w, h = zoom_region(np.array([0.0, 0.0, 0.1, 0.1]), (800, 600))
    assert x == 0 and y == 0 and w > 0.1 and h > 0.1


def test_region_takes_the_short_side_whole_when_the_digit_fills_it():
    """A digit across the height of a 4:1 picture: the region is the full height, 1.6x the digit wide."""
    x, y, w, h = zoom_region(np.array([0.60, 0.05, 0.70, 0.95]), (400, 100))
    assert (y, h) == (0.0, 1.0)
    assert w * 400 == pytest.approx(ZOOM_MARGIN * 90)
    assert x < 0.60 and x + w > 0.70
