"""The prediction routes' multipart parser: files as bytes, text options, and a 4xx for anything else."""

import pytest

from cnnserve.serving.errors import InvalidInput, TooLarge
from cnnserve.serving.multipart import parse_form

FILES, TEXTS = "images", {"model", "top_k"}
CONTENT_TYPE = "multipart/form-data; boundary=xyz"


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--xyz\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--xyz--\r\n"


def test_files_keep_their_bytes_and_order_and_texts_their_values():
    png_like = bytes(range(256)) + b"\r\n--xy" + bytes(100)  # a near-boundary inside the data
    form = parse_form(
        body(part("images", png_like, "0.png"), part("model", b"lenet5-digits"), part("images", b"second", "1.png")),
        CONTENT_TYPE, FILES, TEXTS, max_files=4,
    )
    assert form.files == {"images": [png_like, b"second"]}
    assert form.texts == {"model": "lenet5-digits"}


def test_a_part_is_a_file_when_it_has_a_file_name_even_an_empty_one():
    with pytest.raises(InvalidInput, match="field 'images' must be an uploaded file, not text"):
        parse_form(body(part("images", b"https://example.com/x.png")), CONTENT_TYPE, FILES, TEXTS, max_files=1)
    unnamed_file = b'--xyz\r\nContent-Disposition: form-data; name="images"; filename=""\r\n\r\ndata\r\n'
    assert parse_form(body(unnamed_file), CONTENT_TYPE, FILES, TEXTS, max_files=1).files == {"images": [b"data"]}


def test_an_option_sent_as_a_file_is_named_not_counted_as_an_image():
    with pytest.raises(InvalidInput, match="model must be text, not a file"):
        parse_form(body(part("images", b"x", "a.png"), part("model", b"m", "m.txt")), CONTENT_TYPE, FILES, TEXTS,
                   max_files=1)


def test_an_unknown_field_is_named():
    with pytest.raises(InvalidInput, match=r"unknown field\(s\) \['picture'\]; this endpoint takes images, model"):
        parse_form(body(part("picture", b"x", "a.png")), CONTENT_TYPE, FILES, TEXTS, max_files=1)


def test_more_files_than_allowed_is_too_large():
    three = body(*(part("images", b"x", f"{i}.png") for i in range(3)))
    with pytest.raises(TooLarge, match="the limit is 2"):
        parse_form(three, CONTENT_TYPE, FILES, TEXTS, max_files=2)


def test_a_second_file_where_one_goes_is_a_wrong_form_not_a_large_one():
    two = body(*(part("image", b"x", f"{i}.png") for i in range(2)))
    with pytest.raises(InvalidInput, match="field 'image' takes one image"):
        parse_form(two, CONTENT_TYPE, "image", TEXTS, max_files=1)


@pytest.mark.parametrize(
    ("payload", "content_type", "phrase"),
    [
        (body(part("images", b"x", "a.png")), "multipart/form-data", "names no boundary"),
        (b"not multipart at all", CONTENT_TYPE, "malformed multipart body"),
        (b"--xyz\r\nContent-Disposition form-data\r\n\r\nx\r\n--xyz--\r\n", CONTENT_TYPE, "malformed multipart body"),
        (b"--xyz\r\nContent-Type: image/png\r\n\r\nx\r\n--xyz--\r\n", CONTENT_TYPE, 'has no "name"'),
        (b"--xyz\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(50)) + b"\r\nx\r\n--xyz--\r\n", CONTENT_TYPE,
         "header count"),
        # it said the image field was missing
        (body(part("model", b"lenet5-digits"), part("images", bytes(500), "a.png"))[:-60], CONTENT_TYPE,
         "ends before its closing boundary"),
    ],
    ids=["no-boundary", "garbage", "bad-header-line", "no-name", "too-many-headers", "cut-short"],
)
def test_a_malformed_body_is_invalid_input_naming_the_problem(payload, content_type, phrase):
    with pytest.raises(InvalidInput, match=phrase):
        parse_form(payload, content_type, FILES, TEXTS, max_files=1)
