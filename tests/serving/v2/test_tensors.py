"""V2 tensors from every wire form, and a clear error for data that lies."""

import base64
import struct

import numpy as np
import pytest

from cnnserve.serving.errors import InvalidInput, TooLarge
from cnnserve.serving.v2.tensors import Limits, from_raw, from_values, join_bytes_elements, raw_bytes

LIMIT = Limits(elements=1_000_000, files=64)


def test_raw_fp32_round_trips():
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    tensor = from_raw("images", "FP32", [2, 3, 4], array.tobytes(), LIMIT)
    np.testing.assert_array_equal(tensor.array, array)
    assert raw_bytes(tensor) == array.tobytes()


@pytest.mark.parametrize("header_length", [238, 240])
def test_raw_data_read_in_place_from_a_body_comes_out_aligned(header_length):
    """REST reads the tensors as a view of the body, just after a JSON header of any length."""
    array = np.arange(24, dtype=np.float32)
    body = b"{" * header_length + array.tobytes()
    tensor = from_raw("images", "FP32", [2, 12], memoryview(body)[header_length:], LIMIT)
    np.testing.assert_array_equal(tensor.array.ravel(), array)
    assert tensor.array.ctypes.data % array.dtype.alignment == 0


def test_json_data_may_be_flat_or_nested():
    flat = from_values("x", "FP32", [2, 2], [1, 2, 3, 4], LIMIT)
    nested = from_values("x", "FP32", [2, 2], [[1, 2], [3, 4]], LIMIT)
    np.testing.assert_array_equal(flat.array, nested.array)


def test_bytes_elements_round_trip_through_their_length_prefixes():
    elements = np.array([b"first", b"", b"\x00\x01"], dtype=object)
    tensor = from_raw("image_bytes", "BYTES", [3], join_bytes_elements(elements), LIMIT)
    assert list(tensor.array) == list(elements)


def test_json_bytes_are_base64():
    tensor = from_values("image_bytes", "BYTES", [1], [base64.b64encode(b"png!").decode()], LIMIT)
    assert tensor.array[0] == b"png!"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: from_raw("x", "FP32", [2, 2], bytes(12), LIMIT), "needs 16"),
        (lambda: from_values("x", "FP32", [2, 2], [1, 2, 3], LIMIT), "needs 4"),
        (lambda: from_values("x", "FP32", [2], ["a", "b"], LIMIT), "not a list of FP32"),
        (lambda: from_raw("x", "FP99", [1], bytes(4), LIMIT), "unknown datatype"),
        (lambda: from_raw("x", "FP32", [-1, 4], bytes(16), LIMIT), "non-negative"),
        (lambda: from_raw("x", "BYTES", [1], struct.pack("<I", 99) + b"short", LIMIT), "claims 99 bytes"),
        (lambda: from_raw("x", "BYTES", [1], b"\x01\x00", LIMIT), "length prefix"),
        (lambda: from_raw("x", "BYTES", [1], struct.pack("<I", 1) + b"ab", LIMIT), "left over"),
        (lambda: from_values("x", "BYTES", [1], ["***not base64***"], LIMIT), "base64"),
    ],
    ids=["raw-short", "json-short", "json-not-numbers", "datatype", "negative-dim", "bytes-lie", "bytes-cut",
         "bytes-extra", "bytes-not-base64"],
)
def test_malformed_tensors_are_refused_with_the_reason(call, message):
    with pytest.raises(InvalidInput, match=message):
        call()


def test_element_count_is_limited_before_any_data_is_read():
    with pytest.raises(TooLarge, match="limit is 100"):
        from_raw("x", "FP32", [10, 11], b"", Limits(elements=100, files=64))


def test_image_files_are_limited_to_a_request_s_images_before_any_is_split():
    with pytest.raises(TooLarge, match="7000000 images in one request; the limit is 64"):
        from_raw("image_bytes", "BYTES", [7_000_000], bytes(28_000_000), LIMIT)
    with pytest.raises(TooLarge, match="65 images"):
        from_values("image_bytes", "BYTES", [65], [""] * 65, LIMIT)


@pytest.mark.parametrize(("datatype", "values", "message"), [
    ("FP32", ["0.5", "0.5"], "not a list of FP32 numbers"),  # numpy alone would take text
    ("FP32", [True, False], "not a list of FP32 numbers"),
    ("FP32", [0.5, None], "not a list of FP32 numbers"),  # not "NaN or infinite"
    ("UINT8", [1.7, 2.0], "not a list of UINT8 numbers"),  # numpy alone would make it 1
    ("UINT8", [300, 2], "outside UINT8's range"),
    ("INT64", [2**70, 1], "not a list of INT64 numbers"),
    ("FP32", [[1.0], [2.0, 3.0]], "not a list of FP32 numbers"),  # ragged
])
def test_json_data_must_be_numbers_of_the_datatype_s_kind(datatype, values, message):
    with pytest.raises(InvalidInput, match=message):
        from_values("x", datatype, [2], values, LIMIT)


def test_whole_numbers_serve_a_float_datatype_and_booleans_a_bool_one():
    assert from_values("x", "FP32", [2], [0, 1], LIMIT).array.dtype == np.float32
    assert from_values("x", "BOOL", [2], [True, False], LIMIT).array.tolist() == [True, False]
    assert from_values("x", "UINT8", [0, 3], [], LIMIT).array.dtype == np.uint8  # no data for no image


@pytest.mark.parametrize("shape", [[2**62, 0, 32, 32], [10**30, 0], [0, 2**63]])
def test_an_empty_shape_with_a_dimension_past_the_limit_is_refused_by_its_shape(shape):
    """No element, so under the element limit, but numpy cannot shape it: it was a 500 (gRPC: UNKNOWN)."""
    for make in (lambda: from_values("images", "FP32", shape, [], LIMIT),
                 lambda: from_raw("images", "FP32", shape, b"", LIMIT),
                 lambda: from_values("image_bytes", "BYTES", shape, [], LIMIT)):
        with pytest.raises(TooLarge, match=r"has a dimension over the limit of 1000000 elements"):
            make()


@pytest.mark.parametrize("shape", [[True, 1, 32, 32], [1.0, 1, 32, 32], ["1", 1, 32, 32]])
def test_a_dimension_must_be_a_whole_number_not_a_boolean_or_a_float(shape):
    with pytest.raises(InvalidInput, match="must be non-negative integers"):
        from_values("images", "FP32", shape, [0.5] * 1024, LIMIT)
