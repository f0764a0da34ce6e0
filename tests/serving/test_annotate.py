"""``POST /predict`` with ``Accept: image/png``: the picture back, as a viewer shows it (EXIF orientation applied,
its own size), with the box drawn exactly where the JSON answer puts it. Read back pixel by pixel, on pictures the
server's code did not make: square PNGs and photo-like JPEGs, a third of them with an EXIF orientation tag."""

import io

import numpy as np
import pytest
from PIL import Image

from cnnserve.serving.annotate import BOX_COLOUR
from loadtests.digit_images import CONDITIONS_BY_NAME, condition_files


def edge_points(box: dict, samples: int = 40) -> list[tuple[int, int]]:
    """Points along the box's left, right and bottom edges (the label may cover part of the top one)."""
    xs, ys = np.linspace(box["x1"], box["x2"], samples), np.linspace(box["y1"], box["y2"], samples)
    return [(round(box["x1"]), round(y)) for y in ys] + [(round(box["x2"]), round(y)) for y in ys] + \
        [(round(x), round(box["y2"])) for x in xs]


@pytest.mark.parametrize("condition", ["square", "photo-like"])
def test_the_drawn_box_is_where_the_answer_says(server, condition):
    for file in condition_files(CONDITIONS_BY_NAME[condition], count=6):
        sent = {"image": (f"picture.{file.format.lower()}", file.data)}
        answer = server.client.post("/predict?model=resnet18-digits", files=sent).json()
        drawn = server.client.post("/predict?model=resnet18-digits", files=sent, headers={"Accept": "image/png"})
        assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(drawn.content)).convert("RGB")
        assert picture.size == tuple(file.size) == (answer["image_size"]["width"], answer["image_size"]["height"])
        pixels = np.asarray(picture)
        on_edge = [tuple(pixels[min(y, picture.height - 1), min(x, picture.width - 1)]) == BOX_COLOUR
                   for x, y in edge_points(answer["box"])]
        assert np.mean(on_edge) >= 0.95, f"{np.mean(on_edge):.2f} of the box's edge drawn, {file.format} {file.size}"
