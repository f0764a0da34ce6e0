"""Answers drawn on the picture (``POST /predict`` and ``POST /explain`` with ``Accept: image/png``): the box and
the label with its probability, and for an explanation the occlusion map blended in, over the image as a viewer
shows it (EXIF orientation applied) and at its own size, so what the JSON answer's pixels mean can be seen at a
glance."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..contract.images import visible

BOX_COLOUR = (255, 0, 96)
TEXT_COLOUR = (255, 255, 255)
HEAT_COLOUR = (255, 190, 0)  # amber: apart from the box's magenta and from both ink polarities
HEAT_OPACITY = 0.65  # of the hottest cell
HEAT_FLOOR = 0.1  # a map whose largest drop is smaller stays faint rather than being stretched to full heat


def annotated_png(data: bytes, answer: dict, occlusion: dict | None = None) -> bytes:
    """``data`` (an image file the server has already decoded once) with ``answer``'s box and label drawn on it,
    over ``occlusion``'s map when given."""
    image = visible(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))).convert("RGB")
    if occlusion is not None:
        image = blend_heat(image, occlusion)
    draw_answer(image, answer)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def blend_heat(image: Image.Image, occlusion: dict) -> Image.Image:
    """The map's cells (probability drops) as amber of growing opacity, placed by its geometry in the image's
    pixels; cells over the letterbox's padding fall outside the image and are cut off."""
    grid = np.clip(np.asarray(occlusion["grid"], np.float64), 0, None)
    heat = grid / max(float(grid.max()), HEAT_FLOOR)
    rows, columns = heat.shape
    cells = np.zeros((rows, columns, 4), np.uint8)
    cells[..., :3] = HEAT_COLOUR
    cells[..., 3] = np.round(heat * HEAT_OPACITY * 255).astype(np.uint8)
    x1, y1, _, _ = occlusion["first_cell"]
    dx, dy = occlusion["step"]
    size = (max(1, round(columns * dx)), max(1, round(rows * dy)))
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    layer.paste(Image.fromarray(cells, "RGBA").resize(size, Image.Resampling.NEAREST), (round(x1), round(y1)))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def draw_answer(image: Image.Image, answer: dict) -> None:
    """The box (the answer's pixels, rounded, not truncated) and a label tag above it, or inside the top edge."""
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(image.size) / 100))
    font = ImageFont.load_default(size=max(12, min(image.size) // 14))
    text = f"{answer['label']} {answer['probability']:.0%}"
    box = answer.get("box")
    if box:
        corners = [round(box[k]) for k in ("x1", "y1", "x2", "y2")]
        draw.rectangle(corners, outline=BOX_COLOUR, width=line)
        anchor = (corners[0], corners[1])
    else:
        anchor = (0, 0)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = min(max(0, anchor[0]), max(0, image.width - (right - left) - 2 * line))
    y = anchor[1] - (bottom - top) - 2 * line if anchor[1] - (bottom - top) - 2 * line >= 0 else anchor[1] + line
    draw.rectangle([x, y, x + right - left + 2 * line, y + bottom - top + 2 * line], fill=BOX_COLOUR)
    draw.text((x + line - left, y + line - top), text, fill=TEXT_COLOUR, font=font)
