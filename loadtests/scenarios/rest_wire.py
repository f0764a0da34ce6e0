"""Request bodies for ``POST /predict`` and ``/predict_batch``, built once per run.

Encoding multipart by hand (once, before the load starts) keeps the client's
CPU for sending: this machine's two cores are shared with the server.
"""

from __future__ import annotations

import uuid

FILE_TYPES = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp"),
              "BMP": ("bmp", "image/bmp")}


def multipart(fields: dict[str, str], files: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """``(body, content type)`` of a multipart/form-data form; files are (field, data, image format)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for index, (name, data, fmt) in enumerate(files):
        extension, media_type = FILE_TYPES[fmt]
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="digit{index}.{extension}"\r\n'
            f"Content-Type: {media_type}\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
