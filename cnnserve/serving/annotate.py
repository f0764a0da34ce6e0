"""Answers drawn on the picture (``POST /predict`` with ``Accept: image/png``): the box and the label with its
probability, over the image as a viewer shows it (EXIF orientation applied) and at its own size, so what the JSON
answer's pixels mean can be seen at a glance."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont, ImageOps

BOX_COLOUR = (255, 0, 96)
TEXT_COLOUR = (255, 255, 255)


def annotated_png(data: bytes, answer: dict) -> bytes:
    """``data`` (an image file the server has already decoded once) with ``answer``'s box and label drawn on it."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(image.size) / 100))
    font = ImageFont.load_default(size=max(12, min(image.size) // 14))
    text = f"{answer['label']} {answer['probability']:.0%}"
    box = answer.get("box")
    if box:
        corners = [round(box[k]) for k in ("x1", "y1", "x2", "y2")]  # the answer's pixels, rounded (not truncated)
        draw.rectangle(corners, outline=BOX_COLOUR, width=line)
        anchor = (corners[0], corners[1])
    else:
        anchor = (0, 0)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = min(max(0, anchor[0]), max(0, image.width - (right - left) - 2 * line))
    y = anchor[1] - (bottom - top) - 2 * line if anchor[1] - (bottom - top) - 2 * line >= 0 else anchor[1] + line
    draw.rectangle([x, y, x + right - left + 2 * line, y + bottom - top + 2 * line], fill=BOX_COLOUR)
    draw.text((x + line - left, y + line - top), text, fill=TEXT_COLOUR, font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
