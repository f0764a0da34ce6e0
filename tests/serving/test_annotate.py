"""``POST /predict`` and ``POST /explain`` with ``Accept: image/png``: the picture back, as a viewer shows it (EXIF
orientation applied, its own size up to 2048 pixels a side), with the box drawn exactly where the JSON answer puts it, and for an
explanation the map's hottest cell blended in amber where the JSON map puts it. Read back pixel by pixel, on
pictures the server's code did not make: square PNGs and photo-like JPEGs, a third of them with an EXIF
orientation tag."""

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnserve.serving.annotate import BOX_COLOUR, DRAWN_MAX_SIDE, HEAT_COLOUR, HEAT_FLOOR, HEAT_OPACITY
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


def wide_png(width: int) -> bytes:
    """A white picture ``width`` x 1, written chunk by chunk: a few kilobytes that decode to ``width`` pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" + b"\xff" * width, 9))
            + chunk(b"IEND", b""))


DRAW_IN_LITTLE_MEMORY = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1500 << 20, 1500 << 20))
from cnnserve.serving.annotate import annotated_png
answer = json.loads(sys.stdin.readline())
png = annotated_png(open(sys.argv[1], "rb").read(), answer, answer["occlusion"])
print(len(png))
"""


def test_a_huge_picture_is_drawn_at_most_2048_wide_within_little_memory(server, tmp_path):
    """A 40-megapixel picture 40,000,000 x 1 (39 KB): its map, drawn whole over the letterbox's padding, took a
    worker to 5.6 GB. The drawing is scaled to 2048 on its longer side, the map cut to the picture first."""
    data = wide_png(40_000_000)
    sent = {"image": ("wide.png", data)}
    png = server.client.post("/explain?model=lenet5-digits", files=sent, headers={"Accept": "image/png"})
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (DRAWN_MAX_SIDE, 1)
    answer = server.client.post("/explain?model=lenet5-digits", files=sent).json()
    (tmp_path / "wide.png").write_bytes(data)
    drawn_alone = subprocess.run([sys.executable, "-c", DRAW_IN_LITTLE_MEMORY, str(tmp_path / "wide.png")],
                                 input=json.dumps(answer) + "\n", capture_output=True, text=True, timeout=120)
    assert drawn_alone.returncode == 0, drawn_alone.stderr[-2000:]


def test_a_picture_larger_than_the_drawing_has_its_box_drawn_where_the_answer_says_scaled(server):
    file = condition_files(CONDITIONS_BY_NAME["photo-like"], count=1)[0]
    photo = Image.open(io.BytesIO(file.data))
    grown = 5000 / max(photo.size)  # well over 2048 a side, within the server's pixel limit
    photo = photo.resize((round(photo.width * grown), round(photo.height * grown)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    answer, pixels = drawn(server, "/predict", {"image": ("big.jpg", buffer.getvalue())})
    scale = DRAWN_MAX_SIDE / max(photo.size)
    assert pixels.shape[1::-1] == tuple(round(side * scale) for side in photo.size)
    scaled = {k: v * scale for k, v in answer["box"].items()}
    on_edge = [tuple(pixels[min(y, pixels.shape[0] - 1), min(x, pixels.shape[1] - 1)]) == BOX_COLOUR
               for x, y in edge_points(scaled)]
    assert np.mean(on_edge) >= 0.95


def test_a_tall_picture_and_one_with_unreadable_exif_are_drawn_where_the_answer_says(server):
    """A picture scaled down its long side keeps its box on the digit (each axis by its own ratio: a picture one
    pixel wide keeps its width, so one ratio for both put the box elsewhere); and a PNG whose EXIF cannot be read,
    which the answer reads as stored, is drawn as stored (turning it by its EXIF unguarded was a 500)."""
    file = condition_files(CONDITIONS_BY_NAME["square"], count=1)[0]
    square = Image.open(io.BytesIO(file.data)).convert("RGB")
    tall = Image.new("RGB", (square.width, square.width * 12), tuple(square.getpixel((0, 0))))
    tall.paste(square, (0, 0))
    tall = tall.resize((400, 4800))  # 1:12, drawn 2048 down and 171 across
    assert tall.height > DRAWN_MAX_SIDE
    for image, exif in [(tall, None), (square, b"Exif\x00\x00XX\x00*\x00\x00\x00\x08" + bytes(40))]:
        buffer = io.BytesIO()
        image.save(buffer, "PNG", **({"exif": exif} if exif else {}))
        answer, pixels = drawn(server, "/predict", {"image": ("p.png", buffer.getvalue())})
        scale = (pixels.shape[1] / image.width, pixels.shape[0] / image.height)
        scaled = {k: v * scale[i % 2] for i, (k, v) in enumerate(answer["box"].items())}
        on_edge = [tuple(pixels[min(y, pixels.shape[0] - 1), min(x, pixels.shape[1] - 1)]) == BOX_COLOUR
                   for x, y in edge_points(scaled)]
        assert np.mean(on_edge) >= 0.9, (image.size, np.mean(on_edge))
