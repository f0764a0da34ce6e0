"""Image files to model input: one home for decoding, shared by every protocol.

Any common format (PNG, JPEG, WebP, BMP, GIF's first frame, TIFF) in any mode
becomes float32 [C, H, W] in [0, 1] at the model's size (stretched, as in
training). EXIF orientation is honoured, so boxes map back to the image as a
viewer shows it. The pixel count is checked from the header, before any
decoding, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInput, TooLarge, UnsupportedImage

SUPPORTED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF"}
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees
EXIF_ORIENTATION = 0x0112

Image.MAX_IMAGE_PIXELS = None  # our own limit below applies, with a clear message


def decode_image(data: bytes, channels: int, height: int, width: int, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Return the model input and the image's own (width, height) after EXIF orientation."""
    if not data:
        raise InvalidInput("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedImage(
            f"not a recognised image file (supported: {', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))})"
        ) from None
    except Exception as exc:  # noqa: BLE001  (Pillow raises many types on bad headers)
        raise InvalidInput(f"corrupt image header: {exc}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImage(f"image format {image.format} is not supported")
    w, h = image.size
    if w * h > max_pixels:
        raise TooLarge(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    if w == 0 or h == 0:
        raise InvalidInput(f"image has no pixels ({w}x{h})")
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        original = (h, w) if orientation in SWAPS_AXES else (w, h)
        mode = "L" if channels == 1 else "RGB"
        if image.format == "JPEG":
            side = max(height, width)
            image.draft(mode, (side, side))  # decode at a reduced scale
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode != mode:
            image = image.convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        pixels = np.asarray(image)  # decodes now, if nothing above had to
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"corrupt or truncated image: {exc}") from None
    scaled = np.empty((channels, height, width), np.float32)
    np.multiply(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1), np.float32(1 / 255), out=scaled)
    return scaled, original
