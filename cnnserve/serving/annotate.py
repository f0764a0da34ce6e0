"""Answers drawn on the picture (``POST /predict`` and ``POST /explain`` with ``Accept: image/png``): the box and
the label with its probability, and for an explanation the occlusion map blended in, over the image as a viewer
shows it (EXIF orientation applied) and at its own size, so what the JSON answer's pixels mean can be seen at a
glance."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..contract.images import upright, visible

BOX_COLOUR = (255, 0, 96)
TEXT_COLOUR = (255, 255, 255)
HEAT_COLOUR = (255, 190, 0)  # amber: apart from the box's magenta and from both ink polarities
HEAT_OPACITY = 0.65  # of the hottest cell
HEAT_FLOOR = 0.1  # a map whose largest drop is smaller stays faint rather than being stretched to full heat
DRAWN_MAX_SIDE = 2048  # a picture to look at: a 40-megapixel upload drawn whole took a worker past 1 GB


def annotated_png(data: bytes, answer: dict, occlusion: dict | None = None) -> bytes:
    """``data`` (an image file the server has already decoded once) with ``answer``'s box and label drawn on it,
    over ``occlusion``'s map when given; at its own size up to ``DRAWN_MAX_SIDE``, scaled down beyond."""
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("RGB", (DRAWN_MAX_SIDE, DRAWN_MAX_SIDE))  # a large photo decodes at a fraction of its scale
    image = upright(image)
    image.thumbnail((DRAWN_MAX_SIDE, DRAWN_MAX_SIDE))
    image = visible(image).convert("RGB")
    scale = (image.width / answer["image_size"]["width"], image.height / answer["image_size"]["height"])
    if occlusion is not None:
        image = blend_heat(image, occlusion, scale)
    draw_answer(image, answer, scale)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def blend_heat(image: Image.Image, occlusion: dict, scale: tuple[float, float]) -> Image.Image:
    """The map's cells (probability drops) as amber of growing opacity, placed by its geometry in the image's
    pixels (times ``scale``, the drawing's share of them across and down); cells over the letterbox's padding fall
    outside the image and are cut off before any pixel of them is made (a 40,000,000 x 1 picture's map, drawn whole
    over its padding, took 5.6 GB)."""
    grid = np.clip(np.asarray(occlusion["grid"], np.float64), 0, None)
    heat = grid / max(float(grid.max()), HEAT_FLOOR)
    rows, columns = heat.shape
    cells = np.zeros((rows, columns, 4), np.uint8)
    cells[..., :3] = HEAT_COLOUR
    cells[..., 3] = np.round(heat * HEAT_OPACITY * 255).astype(np.uint8)
    x1, y1 = occlusion["first_cell"][0] * scale[0], occlusion["first_cell"][1] * scale[1]
    dx, dy = occlusion["step"][0] * scale[0], occlusion["step"][1] * scale[1]
    # the image's own rectangle in cell units, within the grid
    seen = (max(0.0, -x1 / dx), max(0.0, -y1 / dy), min(columns, (image.width - x1) / dx),
            min(rows, (image.height - y1) / dy))
    left, top = round(x1 + seen[0] * dx), round(y1 + seen[1] * dy)
    size = (round(x1 + seen[2] * dx) - left, round(y1 + seen[3] * dy) - top)
    if size[0] < 1 or size[1] < 1 or seen[2] <= seen[0] or seen[3] <= seen[1]:
        return image
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    layer.paste(Image.fromarray(cells, "RGBA").resize(size, Image.Resampling.NEAREST, box=seen), (left, top))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def draw_answer(image: Image.Image, answer: dict, scale: tuple[float, float]) -> None:
    """The box (the answer's pixels times ``scale`` across and down, rounded, not truncated) and a label tag above
    it, or inside the top edge."""
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(image.size) / 100))
    font = ImageFont.load_default(size=max(12, min(image.size) // 14))
    text = f"{answer['label']} {answer['probability']:.0%}"
    box = answer.get("box")
    if box:
        corners = [round(box[k] * scale[i % 2]) for i, k in enumerate(("x1", "y1", "x2", "y2"))]
        draw.rectangle(corners, outline=BOX_COLOUR, width=line)
        anchor = (corners[0], corners[1])
    else:
        anchor = (0, 0)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = min(max(0, anchor[0]), max(0, image.width - (right - left) - 2 * line))
    y = anchor[1] - (bottom - top) - 2 * line if anchor[1] - (bottom - top) - 2 * line >= 0 else anchor[1] + line
    draw.rectangle([x, y, x + right - left + 2 * line, y + bottom - top + 2 * line], fill=BOX_COLOUR)
    draw.text((x + line - left, y + line - top), text, fill=TEXT_COLOUR, font=font)
