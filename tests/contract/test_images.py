"""Image decoding: every common format and mode, EXIF orientation, and a clear
error (never a crash) for everything else."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnserve.contract.images import ImageRejected, TooManyPixels, UnsupportedFormat, decode_image

LIMIT = 10_000_000


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width=40, height=30) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    return Image.fromarray(np.tile(x, (height, 1))).convert("RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
@pytest.mark.parametrize("channels", [1, 3])
def test_common_formats_decode_to_model_input(fmt, channels):
    array, where = decode_image(encode(gradient(), fmt), channels, 16, 24, LIMIT)
    assert array.shape == (channels, 16, 24) and array.dtype == np.float32
    assert where.source == (40, 30)
    assert 0 <= array.min() and array.max() <= 1
    left, _, width, _ = where.content
    assert array[:, :, left + width - 1].mean() > array[:, :, left].mean() + 0.5, "the gradient survives decoding"


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I", "F"])
def test_any_mode_is_converted(mode):
    fmt = "TIFF" if mode in ("CMYK", "I", "F") else "PNG"
    array, _ = decode_image(encode(gradient().convert(mode), fmt), 3, 8, 8, LIMIT)
    assert array.shape == (3, 8, 8) and np.isfinite(array).all()


def strokes(mode: str, paper, ink) -> Image.Image:
    """A ring and a bar, antialiased, as a pen on an HTML canvas leaves them."""
    image = Image.new(mode, (60, 40), paper)
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 6, 34, 34), outline=ink, width=5)
    draw.line((42, 4, 50, 36), fill=ink, width=4)
    return image


@pytest.mark.parametrize(("paper", "ink"), [(0, 255), (255, 0)], ids=["light-ink", "dark-ink"])
@pytest.mark.parametrize("channels", [1, 3])
def test_ink_on_a_transparent_page_reads_as_on_the_paper_that_shows_it(paper, ink, channels):
    """A canvas export holds its ink in the alpha channel over transparent black (or white): dropping the alpha
    left a blank page. Each is read as the same strokes on a page of the opposite shade."""
    opaque = strokes("L", paper, ink)
    coverage = strokes("L", 0, 255)
    transparent = Image.merge("RGBA", [Image.new("L", coverage.size, ink)] * 3 + [coverage])  # ink in alpha alone
    expected, _ = decode_image(encode(opaque, "PNG"), channels, 40, 60, LIMIT)
    for fmt, image in [("PNG", transparent), ("PNG", transparent.convert("LA")), ("WEBP", transparent)]:
        array, _ = decode_image(encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {})), channels, 40, 60,
                                LIMIT)
        assert np.abs(array - expected).max() <= 2 / 255, (fmt, image.mode)


def test_a_palette_colour_marked_transparent_is_paper():
    page = strokes("P", 0, 1)
    page.putpalette([0, 0, 0, 20, 20, 20] + [0] * 762)
    page.info["transparency"] = 0  # index 0, black, shows through: the page is clear
    array, _ = decode_image(encode(page, "GIF", transparency=0), 1, 40, 60, LIMIT)
    expected, _ = decode_image(encode(strokes("L", 255, 20), "PNG"), 1, 40, 60, LIMIT)
    assert np.abs(array - expected).max() <= 1 / 255


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_samples_are_scaled_to_8_bits_not_clipped_to_white(fmt):
    eight = np.asarray(gradient().convert("L"))
    sixteen = Image.fromarray(eight.astype(np.uint16) * 257)  # I;16: 0..65535
    assert sixteen.mode == "I;16"
    array, _ = decode_image(encode(sixteen, fmt), 1, 30, 40, LIMIT)
    expected, _ = decode_image(encode(Image.fromarray(eight), "PNG"), 1, 30, 40, LIMIT)
    assert np.abs(array - expected).max() <= 1 / 255


def test_exif_orientation_is_honoured():
    image = gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: a viewer rotates it 90 degrees clockwise
    array, where = decode_image(encode(image, "JPEG", exif=exif), 1, 30, 40, LIMIT)
    assert where.source == (30, 40), "width and height as a viewer shows the image"
    assert array[0, -1, :].mean() > array[0, 0, :].mean() + 0.5, "the gradient now runs top to bottom"


def test_gif_first_frame_is_used():
    frames = [Image.new("L", (8, 8), 250), Image.new("L", (8, 8), 5)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    array, _ = decode_image(buffer.getvalue(), 1, 8, 8, LIMIT)
    assert array.mean() > 0.9


def test_large_jpeg_decodes_at_reduced_scale_to_the_same_answer():
    big = gradient(2000, 1500)
    array, where = decode_image(encode(big, "JPEG", quality=95), 3, 32, 32, LIMIT)
    assert where.source == (2000, 1500)
    reference, _ = decode_image(encode(big, "PNG"), 3, 32, 32, LIMIT)
    assert np.abs(array - reference).mean() < 0.02


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", ImageRejected, "empty"),
        (b"this is plain text, not a picture", UnsupportedFormat, "not a recognised image"),
        (encode(gradient(), "PNG")[:60], ImageRejected, "(?i)truncated"),
        (encode(gradient(), "JPEG")[:200], ImageRejected, "(?i)truncated"),
        (encode(gradient(), "PPM"), UnsupportedFormat, "PPM"),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "unsupported-format"],
)
def test_bad_files_are_rejected_naming_the_problem(data, error, message):
    with pytest.raises(error, match=message):
        decode_image(data, 3, 8, 8, LIMIT)


def test_a_mode_pillow_cannot_convert_is_an_unsupported_format_not_a_corrupt_file():
    with pytest.raises(UnsupportedFormat, match="image mode LAB is not supported"):
        decode_image(encode(Image.new("LAB", (8, 8)), "TIFF"), 1, 8, 8, LIMIT)


def test_pixel_bomb_is_refused_from_the_header_alone():
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")  # tiny file, 400 megapixels
    assert len(bomb) < 200_000
    with pytest.raises(TooManyPixels, match="400000000 pixels"):
        decode_image(bomb, 1, 8, 8, LIMIT)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_unreadable_exif_metadata_leaves_the_picture_as_stored(fmt):
    """The pixels are good; the orientation cannot be read, so the picture is taken as stored (it was refused as
    "corrupt or truncated image: not a TIFF file")."""
    garbage = b"Exif\x00\x00XX\x00*\x00\x00\x00\x08" + bytes(range(40))
    array, where = decode_image(encode(gradient(), fmt, exif=garbage), 1, 30, 40, LIMIT)
    expected, _ = decode_image(encode(gradient(), fmt), 1, 30, 40, LIMIT)
    assert where.source == (40, 30) and np.abs(array - expected).max() <= 2 / 255


def test_a_float_picture_holding_nan_or_infinity_reads_as_its_finite_pixels():
    """NaN made the range search raise StopIteration: a 500, or off the event loop a request that never ended."""
    samples = np.asarray(gradient().convert("L"), np.float32) / 255
    samples[3:6, 4:9] = np.nan
    samples[10, 10] = np.inf
    array, _ = decode_image(encode(Image.fromarray(samples, "F"), "TIFF"), 1, 30, 40, LIMIT)
    assert np.isfinite(array).all() and array.max() > 0.9
