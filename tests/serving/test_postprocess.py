"""Answers: top-k in order, the box in the image's own pixels."""

import numpy as np

from cnnserve.serving.postprocess import box_in_pixels, describe, ordered_corners

LABELS = ["cat", "dog", "fox"]


def test_top_k_is_sorted_by_probability():
    answer = describe(np.array([0.2, 0.5, 0.3]), np.array([0.1, 0.2, 0.5, 0.6]), LABELS, 2, (200, 100))
    assert answer["label"] == "dog" and answer["class_index"] == 1
    assert [t["label"] for t in answer["top_k"]] == ["dog", "fox"]


def test_box_maps_back_to_original_pixels():
    pixels, normalized = box_in_pixels(np.array([0.1, 0.2, 0.5, 0.6]), width=200, height=100)
    assert pixels == {"x1": 20.0, "y1": 20.0, "x2": 100.0, "y2": 60.0}
    assert normalized["x2"] == 0.5


def test_swapped_corners_are_ordered_and_clipped():
    pixels, _ = box_in_pixels(np.array([0.9, 1.2, 0.1, -0.1]), width=10, height=10)
    assert pixels == {"x1": 1.0, "y1": 0.0, "x2": 9.0, "y2": 10.0}


def test_classification_only_model_says_it_has_no_box():
    answer = describe(np.array([0.7, 0.2, 0.1]), None, LABELS, 1, (5, 5))
    assert answer["box"] is None and "no box" in answer["note"]


def test_every_protocol_gets_boxes_with_ordered_corners():
    boxes = np.array([[0.8, 0.1, 0.3, 0.9], [0.1, 0.7, 0.4, 0.2]], np.float32)
    np.testing.assert_allclose(ordered_corners(boxes), [[0.3, 0.1, 0.8, 0.9], [0.1, 0.2, 0.4, 0.7]], rtol=1e-6)
