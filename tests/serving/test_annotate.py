"""``POST /predict`` and ``POST /explain`` with ``Accept: image/png``: the picture back, as a viewer shows it (EXIF
orientation applied, its own size), with the box drawn exactly where the JSON answer puts it, and for an
explanation the map's hottest cell blended in amber where the JSON map puts it. Read back pixel by pixel, on
pictures the server's code did not make: square PNGs and photo-like JPEGs, a third of them with an EXIF
orientation tag."""

import io

import numpy as np
import pytest
from PIL import Image

from cnnserve.serving.annotate import BOX_COLOUR, HEAT_COLOUR, HEAT_FLOOR, HEAT_OPACITY
from loadtests.digit_images import CONDITIONS_BY_NAME, condition_files
from loadtests.pointing_game import hottest_point
from tests.serving.helpers import edge_points


def drawn(server, route: str, sent: dict) -> tuple[dict, np.ndarray]:
    """The JSON answer and the PNG answer's pixels for one picture."""
    answer = server.client.post(f"{route}?model=resnet18-digits", files=sent).json()
    png = server.client.post(f"{route}?model=resnet18-digits", files=sent, headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    return answer, np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))


@pytest.mark.parametrize("route", ["/predict", "/explain"])
@pytest.mark.parametrize("condition", ["square", "photo-like"])
def test_the_drawn_box_is_where_the_answer_says(server, condition, route):
    for file in condition_files(CONDITIONS_BY_NAME[condition], count=6):
        answer, pixels = drawn(server, route, {"image": (f"picture.{file.format.lower()}", file.data)})
        height, width, _ = pixels.shape
        assert (width, height) == tuple(file.size) == (answer["image_size"]["width"], answer["image_size"]["height"])
        on_edge = [tuple(pixels[min(y, height - 1), min(x, width - 1)]) == BOX_COLOUR
                   for x, y in edge_points(answer["box"])]
        assert np.mean(on_edge) >= 0.95, f"{np.mean(on_edge):.2f} of the box's edge drawn, {file.format} {file.size}"


def test_the_explanation_png_blends_the_hottest_cell_where_the_map_says(server):
    checked = 0
    for file in condition_files(CONDITIONS_BY_NAME["photo-like"], count=6):
        sent = {"image": (f"picture.{file.format.lower()}", file.data)}
        explained, heated = drawn(server, "/explain", sent)
        _, plain = drawn(server, "/predict", sent)
        x, y = (round(v) for v in hottest_point(explained))
        if not (0 <= x < plain.shape[1] and 0 <= y < plain.shape[0]) or tuple(plain[y, x]) == BOX_COLOUR:
            continue  # over the letterbox's padding, or under the box's line
        hottest = max(max(row) for row in explained["occlusion"]["grid"])
        opacity = HEAT_OPACITY * hottest / max(hottest, HEAT_FLOOR)
        expected = (1 - opacity) * plain[y, x] + opacity * np.array(HEAT_COLOUR)
        assert np.abs(heated[y, x] - expected).max() <= 3, (heated[y, x], expected)
        checked += 1
    assert checked >= 4
