"""Property-based tests: whatever bytes arrive, the image decoder and the V2
request parser either succeed or raise a client error naming the problem;
never another exception, never a hang."""

import io
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from starlette.requests import Request

from cnnserve.contract.images import ImageRejected, decode_image
from cnnserve.serving.errors import ServiceError
from cnnserve.serving.v2.rest import parse_inputs, request_timeout_ms, requested_outputs, split_body
from cnnserve.serving.v2.tensors import DATATYPES, Limits, from_raw

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")]


def decodes_or_refuses(data: bytes) -> None:
    try:
        array, where = decode_image(data, 3, 16, 16, 4_000_000)
    except ImageRejected:
        return
    assert array.shape == (3, 16, 16) and np.isfinite(array).all() and min(where.source) > 0


@BOUNDED
@given(st.binary(max_size=4096))
def test_decoder_on_arbitrary_bytes(data):
    decodes_or_refuses(data)


@BOUNDED
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
       st.integers(0, 10**6))
def test_decoder_on_damaged_real_images(seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    decodes_or_refuses(bytes(data[: max(1, cut % (len(data) + 1))]))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
inputs = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["images", "image_bytes", "x"]), "datatype": st.sampled_from([*DATATYPES, "FP99"]),
         "shape": st.lists(st.integers(-2, 40) | st.booleans(), max_size=5)},
        optional={"data": json_values, "parameters": json_values | st.fixed_dictionaries({}, optional={
            "binary_data_size": st.integers(-5, 5000) | st.text(max_size=3)})},
    ),
    max_size=3,
)
requests = st.fixed_dictionaries(
    {"inputs": inputs},
    optional={"outputs": json_values | st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)},
                                                                       optional={"parameters": json_values})),
              "parameters": json_values},
)


@BOUNDED
@given(st.one_of(requests, json_values), st.binary(max_size=512),
       st.one_of(st.none(), st.text(max_size=6)))
def test_v2_parser_on_arbitrary_requests(payload, binary, header_length):
    text = json.dumps(payload).encode()
    body = text + binary
    header = header_length if header_length is not None else str(len(text))
    try:
        parsed, rest = split_body(body, header)
        requested_outputs(parsed)
        request_timeout_ms(parsed, Request({"type": "http", "headers": []}))
        tensors = parse_inputs(parsed, rest, Limits(elements=100_000, files=64))
    except ServiceError:
        return
    for tensor in tensors:
        assert tensor.datatype in DATATYPES


@BOUNDED
@given(st.sampled_from([*DATATYPES, "FP99"]), st.lists(st.integers(0, 50), max_size=4), st.binary(max_size=2048))
def test_raw_tensors_on_arbitrary_bytes(datatype, shape, raw):
    try:
        tensor = from_raw("x", datatype, shape, raw, Limits(elements=100_000, files=64))
    except ServiceError:
        return
    assert list(tensor.array.shape) == shape
