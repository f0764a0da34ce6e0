"""The resize contract: letterbox keeps the aspect ratio, centres the image, pads
with the colour of its border, and boxes map back through the exact inverse."""

import io

import numpy as np
import pytest
from PIL import Image

from cnnserve.contract.images import decode_image
from cnnserve.contract.letterbox import LETTERBOX, STRETCH, WHOLE, fit, placement, to_model_input


@pytest.mark.parametrize(("source", "content"), [
    ((400, 100), (0, 24, 64, 16)),  # 4:1 wide: full width, centred vertically
    ((100, 400), (24, 0, 16, 64)),  # 1:4 tall
    ((300, 300), (0, 0, 64, 64)),
    ((640, 480), (0, 8, 64, 48)),
])
def test_letterbox_keeps_the_aspect_ratio_and_centres(source, content):
    assert placement(source, 64, 64, LETTERBOX).content == content


def test_stretch_fills_the_input_for_cards_written_before_letterbox():
    assert placement((400, 100), 64, 64, STRETCH).content == (0, 0, 64, 64)


@pytest.mark.parametrize("policy", [LETTERBOX, STRETCH])
@pytest.mark.parametrize("region", [WHOLE, (0.1, 0.2, 0.3, 0.5)])
def test_boxes_map_back_through_the_exact_inverse(policy, region):
    where = placement((517, 133), 48, 48, policy, region)
    boxes = np.random.default_rng(0).random((20, 4))
    np.testing.assert_allclose(where.to_input(where.to_source(boxes)), boxes, atol=1e-12)


def test_a_box_on_the_content_maps_to_the_region_of_the_image():
    where = placement((400, 100), 64, 64, LETTERBOX)
    # The content spans y 24..40 of the input: its corners are the image's corners.
    np.testing.assert_allclose(where.to_source(np.array([0, 24 / 64, 1, 40 / 64])), [0, 0, 1, 1])


def test_padding_continues_the_paper_in_either_polarity():
    for paper, ink in ((250, 10), (10, 250)):
        page = np.full((50, 200), paper, np.uint8)
        page[10:40, 90:110] = ink
        pixels, where = fit(Image.fromarray(page), 32, 32, LETTERBOX)
        left, top, width, height = where.content
        assert (pixels[:top] == paper).all() and (pixels[top + height :] == paper).all()
        assert abs(int(pixels[16, 16]) - ink) < abs(paper - ink) / 2, "the ink survives in the content"


def test_server_decoding_is_the_shared_function():
    """decode_image adds only the file handling (format, EXIF, limits) around to_model_input."""
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 310, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    served, served_where = decode_image(buffer.getvalue(), 3, 40, 40, 10**7)
    direct, direct_where = to_model_input(picture, 3, 40, 40, LETTERBOX)
    np.testing.assert_array_equal(served, direct)
    assert served_where == direct_where


def test_exif_rotated_image_maps_boxes_to_the_pixels_a_viewer_sees():
    """A 300x180 picture as a viewer shows it, stored sideways with EXIF orientation 6."""
    shown = np.full((180, 300), 230, np.uint8)
    shown[40:120, 200:250] = 20  # the "digit": x 200..250, y 40..120 as shown
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    image, where = decode_image(buffer.getvalue(), 1, 64, 64, 10**7)
    assert where.source == (300, 180)
    dark = np.argwhere(image[0] < 0.5)
    (y1, x1), (y2, x2) = dark.min(0), dark.max(0) + 1
    box = where.to_source(np.array([x1, y1, x2, y2]) / 64) * [300, 180, 300, 180]
    np.testing.assert_allclose(box, [200, 40, 250, 120], atol=300 / 64)
