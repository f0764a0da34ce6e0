"""Image files to model input: one home for decoding, shared by every protocol.

Any common format (PNG, JPEG, WebP, BMP, GIF's first frame, TIFF) in any mode
becomes float32 [C, H, W] in [0, 1] at the model's size, fitted by the model's
resize policy through ``letterbox.to_model_input``, the function training
renders its data with. EXIF orientation is honoured, so boxes map back to the
image as a viewer shows it. The pixel count is checked from the header, before
any decoding, so a decompression bomb costs nothing. ``region`` decodes only a
part of the image (the serving zoom-in pass) at the model's size.

A file that cannot be used raises ``ImageRejected`` (or one of its two
narrower kinds); the server answers each with its own HTTP status.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .letterbox import LETTERBOX, WHOLE, Placement, Region, to_model_input

SUPPORTED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF"}
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
EXIF_ORIENTATION = 0x0112



class ImageRejected(ValueError):
    """The file is empty, corrupt or has no pixels; the message says which."""


class UnsupportedFormat(ImageRejected):
    """The file is not an image format this contract reads."""


class TooManyPixels(ImageRejected):
    """The header declares more pixels than the caller allows."""


Image.MAX_IMAGE_PIXELS = None  # our own limit below applies, with a clear message

DEEP_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}  # one channel of more than 8 bits (16-bit PNG, TIFF)
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa"}
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as Pillow's convert("L")


def visible(image: Image.Image) -> Image.Image:
    """The picture as a viewer shows it, in 8 bits a channel; Pillow's ``convert`` alone got two kinds wrong.

    - Deeper samples are scaled to 8 bits: converted, a 16-bit PNG's values above 255 clipped to a white page.
    - Transparent pixels are laid on the background that contrasts with what is drawn: an HTML canvas exports
      black ink on transparent black, which without its alpha is a black page (a "3" was read as "0" at 0.19, with
      the box over the whole picture). Light ink gets a black background, dark ink a white one.
    """
    if image.mode in DEEP_MODES:
        samples = np.nan_to_num(np.asarray(image, np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # one copy, in place
        if image.mode.startswith("I;16"):
            full = 65535.0
        else:  # 32-bit and float files say nothing of their range: the least of these that holds it
            peak = float(samples.max())
            full = next((top for top in (1.0, 255.0, 65535.0) if peak <= top), peak)
        np.clip(samples, 0, full, out=samples)
        samples *= 255 / full
        return Image.fromarray(np.rint(samples, out=samples).astype(np.uint8), "L")
    if image.mode not in ALPHA_MODES and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    sample = np.asarray(rgba.resize((min(rgba.width, 256), min(rgba.height, 256)), Image.Resampling.BOX), np.float32)
    alpha = sample[..., 3] / 255
    if alpha.min() == 1:
        return rgba.convert("RGB")
    ink = float((sample[..., :3] @ LUMA * alpha).sum() / max(alpha.sum(), 1e-6))
    paper = Image.new("RGB", rgba.size, (255, 255, 255) if ink < 128 else (0, 0, 0))
    paper.paste(rgba, mask=rgba)  # over the paper by its alpha, with no RGBA copy of the page: 40 MP took 600 MB
    return paper


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The file's image with its header checked (format, pixel count), nothing decoded yet: its ``size`` says what
    decoding it will cost before anyone pays it."""
    if not data:
        raise ImageRejected("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedFormat(
            f"not a recognised image file (supported: {', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))})"
        ) from None
    except Exception as exc:  # noqa: BLE001  (Pillow raises many types on bad headers)
        raise ImageRejected(f"corrupt image header: {exc}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormat(f"image format {image.format} is not supported")
    w, h = image.size
    if w * h > max_pixels:
        raise TooManyPixels(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    if w == 0 or h == 0:
        raise ImageRejected(f"image has no pixels ({w}x{h})")
    return image


def orientation_of(image: Image.Image) -> int:
    """The EXIF orientation, 1 (as stored) when the metadata cannot be read: the pixels are still good."""
    try:
        return image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001  (a corrupt eXIf chunk raises whatever its TIFF parser meets)
        return 1


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says, or as stored when that cannot be read."""
    return image if orientation_of(image) == 1 else ImageOps.exif_transpose(image)


def image_to_input(
    image: Image.Image, channels: int, height: int, width: int, policy: str = LETTERBOX, region: Region = WHOLE
) -> tuple[np.ndarray, Placement]:
    """An opened image (``open_image``) decoded: the model input and where the image (or ``region`` of it) landed
    in it."""
    w, h = image.size
    try:
        orientation = orientation_of(image)
        original = (h, w) if orientation in SWAPS_AXES else (w, h)
        if image.format == "JPEG":
            # Decode at a reduced scale, never below what the input (or the region's share of it) needs.
            side = int(max(height, width) / min(region[2], region[3]))
            image.draft("L" if channels == 1 else "RGB", (side, side))
        if orientation != 1:  # read once above: turned as upright() would
            image = ImageOps.exif_transpose(image)
        array, where = to_model_input(visible(image), channels, width, height, policy, region)  # decodes now
    except ValueError as exc:
        if str(exc).startswith("conversion from"):  # Pillow cannot convert the mode (LAB, say): a format matter
            raise UnsupportedFormat(f"image mode {image.mode} is not supported: {exc}") from None
        raise ImageRejected(f"corrupt or truncated image: {exc}") from None
    except (OSError, SyntaxError, EOFError) as exc:
        raise ImageRejected(f"corrupt or truncated image: {exc}") from None
    return array, replace(where, source=original)  # a draft decode is smaller: boxes go to the file's own pixels


def decode_image(
    data: bytes,
    channels: int,
    height: int,
    width: int,
    max_pixels: int,
    policy: str = LETTERBOX,
    region: Region = WHOLE,
) -> tuple[np.ndarray, Placement]:
    """Return the model input and where the image (or ``region`` of it) landed in it."""
    return image_to_input(open_image(data, max_pixels), channels, height, width, policy, region)
