"""``POST /explain``: the occlusion map of an answer, through the real server and the model's batcher.

The pointing game judges it with pictures the server's code did not make: over 200 test-split digits as real
files of 4:3 and 16:9 (either polarity), the most sensitive window of ResNet-18's map must sit on the digit's ink
box in at least 90% of them."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from loadtests.digit_images import CONDITIONS_BY_NAME, condition_files, digit_files
from loadtests.pointing_game import CONDITION, points_at_ink
from tests.committed import VERSIONS

POINTING_DIGITS = 200


def explain(server, data: bytes, model: str, **options) -> dict:
    response = server.client.post(f"/explain?model={model}", files={"image": ("digit.png", data)},
                                  data={k: str(v) for k, v in options.items()})
    assert response.status_code == 200, response.text
    return response.json()


def test_an_explanation_answers_like_predict_and_maps_every_window(server):
    data = digit_files(1, 32, count=1)[0].data
    answer = explain(server, data, "lenet5-digits")
    predicted = server.client.post("/predict?model=lenet5-digits", files={"image": ("digit.png", data)}).json()
    assert answer["label"] == predicted["label"] and answer["version"] == VERSIONS["lenet5-digits"]
    occlusion = answer["occlusion"]
    assert (occlusion["window"], occlusion["stride"]) == (4, 4)  # an eighth of the 32-pixel input, tiling it
    assert np.array(occlusion["grid"]).shape == (8, 8) and answer["timings"]["occluded_images"] == 64
    assert occlusion["target"] == answer["label"]
    other = explain(server, data, "lenet5-digits", target="3", window=16, stride=16)
    assert other["occlusion"]["target"] == "3" and np.array(other["occlusion"]["grid"]).shape == (2, 2)
    tiles = explain(server, data, "lenet5-digits", window=2)["occlusion"]  # the stride follows the window asked
    assert (tiles["window"], tiles["stride"]) == (2, 2) and np.array(tiles["grid"]).shape == (16, 16)
    assert len(answer["top_k"]) == 5 and len(explain(server, data, "lenet5-digits", top_k=2)["top_k"]) == 2
    # Hiding parts of the digit costs the answer. This digit fills most of the picture, and LeNet-5 version 4 (trained
    # on tight crops) keeps its answer under any one default square (largest drop 0.002): a quarter of the side,
    # half overlapping, drops it by 0.52.
    larger = explain(server, data, "lenet5-digits", window=8, stride=4)
    assert max(max(row) for row in larger["occlusion"]["grid"]) > 0.25


@pytest.mark.parametrize(("options", "phrase"), [
    ({"window": 0}, "window must be 1 to 32"),
    ({"window": 1, "stride": 1}, "max_explain_windows"),  # 1,024 copies
    ({"window": 4, "stride": 1000}, "stride 1 to the window, got window 4 and stride 1000"),  # pixels no square covers
    ({"target": "eleven"}, "target must be one of"),
    ({"top_k": 11}, "top_k must be between 1 and 10"),
])
def test_impossible_explanations_are_refused_with_the_reason(server, options, phrase):
    response = server.client.post("/explain?model=lenet5-digits", files={"image": ("d.png", digit_files(1, 32, count=1)[0].data)},
                                  data={k: str(v) for k, v in options.items()})
    assert response.status_code == 400 and phrase in response.json()["error"]


def test_the_map_points_at_the_digit(server):
    files = condition_files(CONDITIONS_BY_NAME[CONDITION], count=POINTING_DIGITS)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda f: explain(server, f.data, "resnet18-digits"), files))
    hits = sum(points_at_ink(file, answer) for file, answer in zip(files, answers))
    assert hits / len(files) >= 0.9, f"the map pointed at the digit in {hits} of {len(files)}"
