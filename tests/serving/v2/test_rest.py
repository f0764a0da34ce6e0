"""The Open Inference Protocol over REST against the real service: metadata,
health, configuration, inference with JSON and binary tensors, FP32, UINT8 and
image bytes, selected outputs, and a 4xx naming the problem for bad requests."""

import json
import struct
import time

import numpy as np
import pytest

from cnnserve.contract.images import decode_image
from loadtests.digit_images import digit_files
from tests.committed import VERSIONS
from tests.serving.helpers import metric_total, v2_grey, v2_json

MODEL = "lenet5-digits"
VERSION = VERSIONS[MODEL]


@pytest.fixture(scope="module")
def digits():
    files = digit_files(1, 32, count=4, seed=5)
    images = np.stack([decode_image(f.data, 1, 32, 32, 10**7)[0] for f in files])
    return files, images


def infer_json(server, images, model=MODEL, **extra):
    body = {**v2_json(images), **extra}
    return server.client.post(f"/v2/models/{model}/infer", json=body)


def binary_request(tensors: list[tuple[str, str, list, bytes]], outputs=None) -> tuple[bytes, dict]:
    header = {"inputs": [{"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
                         for n, d, s, b in tensors]}
    if outputs is not None:
        header["outputs"] = outputs
    text = json.dumps(header).encode()
    return text + b"".join(b for *_, b in tensors), {"Inference-Header-Content-Length": str(len(text))}


def split_binary_response(response) -> tuple[dict, dict]:
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    arrays, offset = {}, length
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        arrays[output["name"]] = np.frombuffer(response.content[offset : offset + size], np.float32).reshape(
            output["shape"]
        )
        offset += size
    return header, arrays


def test_server_metadata_advertises_the_extensions(server):
    metadata = server.client.get("/v2").json()
    assert metadata["name"] == "cnnserve"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(metadata["extensions"])


def test_statistics_are_kept_per_model_version_and_unknown_models_are_named(server):
    before = time.time() * 1000
    assert server.client.post(f"/v2/models/{MODEL}/infer", json=v2_grey([1, 1, 32, 32])).status_code == 200
    (latest,) = server.client.get(f"/v2/models/{MODEL}/versions/{VERSION}/stats").json()["model_stats"]
    assert before - 1 <= latest["last_inference"] <= time.time() * 1000 + 1  # Triton's: ms since the epoch (was 0)
    everything = server.client.get("/v2/models/stats").json()["model_stats"]
    assert {(m["name"], m["version"]) for m in everything} >= {(MODEL, str(VERSION))}
    (one,) = server.client.get(f"/v2/models/{MODEL}/versions/{VERSION}/stats").json()["model_stats"]
    assert set(one["inference_stats"]) == {"success", "fail", "queue", "compute_input", "compute_infer", "compute_output"}
    missing = server.client.get("/v2/models/nope/stats")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert server.client.get(f"/v2/models/{MODEL}/versions/x/stats").status_code == 400


def test_health_endpoints(server):
    assert server.client.get("/v2/health/live").status_code == 200
    assert server.client.get("/v2/health/ready").status_code == 200
    assert server.client.get(f"/v2/models/{MODEL}/ready").status_code == 200
    assert server.client.get(f"/v2/models/{MODEL}/versions/{VERSION}/ready").status_code == 200
    assert server.client.get("/v2/models/nope/ready").status_code == 404


def test_model_metadata_has_a_dynamic_batch_axis(server):
    for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/{VERSION}"):
        metadata = server.client.get(path).json()
        assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 32, 32]}]
        assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "boxes"]
        assert metadata["outputs"][0]["shape"] == [-1, 10]


def test_model_config_is_in_tritons_form(server):
    config = server.client.get(f"/v2/models/{MODEL}/config").json()
    assert config["max_batch_size"] > 0
    assert config["input"][0] == {"name": "images", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
                                  "dims": [1, 32, 32]}
    assert config["output"][1] == {"name": "boxes", "data_type": "TYPE_FP32", "dims": [4]}
    assert "dynamic_batching" in config


def test_json_inference_matches_the_predict_endpoint(server, digits):
    files, images = digits
    response = infer_json(server, images)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == MODEL and answer["model_version"] == str(VERSION)
    probabilities = np.array(answer["outputs"][0]["data"]).reshape(answer["outputs"][0]["shape"])
    for file, row in zip(files, probabilities):
        predicted = server.client.post("/predict", files={"image": ("d", file.data)}, data={"model": MODEL}).json()
        assert str(row.argmax()) == predicted["label"]
        assert row.max() == pytest.approx(predicted["probability"], abs=1e-4)
    assert {"queue_ms", "compute_ms", "batch_images"} <= set(answer["parameters"])


def test_binary_inference_with_binary_outputs(server, digits):
    _, images = digits
    body, headers = binary_request(
        [("images", "FP32", list(images.shape), images.tobytes())],
        outputs=[{"name": "boxes", "parameters": {"binary_data": True}}],
    )
    response = server.client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    header, arrays = split_binary_response(response)
    assert [o["name"] for o in header["outputs"]] == ["boxes"], "only the requested output"
    expected = np.array(infer_json(server, images).json()["outputs"][1]["data"]).reshape(-1, 4)
    np.testing.assert_allclose(arrays["boxes"], expected, atol=1e-5)


def test_uint8_pixels_give_the_same_answer_as_fp32(server, digits):
    _, images = digits
    pixels = (images * 255).round().astype(np.uint8)
    body, headers = binary_request([("images", "UINT8", list(pixels.shape), pixels.tobytes())])
    response = server.client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    as_uint8 = np.array(response.json()["outputs"][0]["data"])
    as_fp32 = np.array(infer_json(server, pixels.astype(np.float32) / 255).json()["outputs"][0]["data"])
    np.testing.assert_allclose(as_uint8, as_fp32, atol=1e-5)


def test_image_bytes_are_decoded_by_the_server(server, digits):
    files, images = digits
    payload = b"".join(struct.pack("<I", len(f.data)) + f.data for f in files)
    body, headers = binary_request([("image_bytes", "BYTES", [len(files)], payload)])
    response = server.client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["parameters"]["zoomed_images"] == 0, "large digits: no second look"
    from_pixels = infer_json(server, images).json()
    for got, expected in zip(answer["outputs"], from_pixels["outputs"]):  # square files: the same boxes too
        np.testing.assert_allclose(got["data"], expected["data"], atol=1e-5)


def nan_images():
    images = np.zeros((1, 1, 32, 32), np.float32)
    images[0, 0, 3, 3] = np.nan
    return images


def both_data_and_binary():
    header = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 32, 32], "data": [0.5] * 1024,
                          "parameters": {"binary_data_size": 4096}}]}
    text = json.dumps(header).encode()
    return text + bytes(4096), {"Inference-Header-Content-Length": str(len(text))}


BAD_REQUESTS = [
    ("wrong-shape", lambda: binary_request([("images", "FP32", [1, 3, 32, 32], bytes(4 * 3 * 32 * 32))]), 400,
     "shape [N, 1, 32, 32]"),
    ("wrong-datatype", lambda: binary_request([("images", "FP64", [1, 1, 32, 32], bytes(8 * 1024))]), 400,
     "must be FP32"),
    ("length-mismatch", lambda: binary_request([("images", "FP32", [2, 1, 32, 32], bytes(4 * 1024))]), 400,
     "needs 8192"),
    ("nan", lambda: binary_request([("images", "FP32", [1, 1, 32, 32], nan_images().tobytes())]), 400, "NaN"),
    ("unknown-input", lambda: binary_request([("pixels", "FP32", [1, 1, 32, 32], bytes(4096))]), 400,
     "unknown input 'pixels'"),
    ("output-twice", lambda: binary_request([("images", "FP32", [1, 1, 32, 32], bytes(4096))],
                                            outputs=[{"name": "boxes"}, {"name": "boxes"}]), 400, "requested twice"),
    ("unknown-output", lambda: binary_request([("images", "FP32", [1, 1, 32, 32], bytes(4096))],
                                              outputs=[{"name": "logits"}]), 400, "unknown output"),
    ("bytes-not-images", lambda: binary_request([("image_bytes", "BYTES", [1], struct.pack("<I", 4) + b"junk")]),
     415, "not a recognised image"),
    ("too-many-elements", lambda: binary_request([("images", "FP32", [100000, 1, 32, 32], b"")]), 413, "limit"),
    ("data-and-binary", lambda: both_data_and_binary(), 400, "both data and binary_data_size"),  # data was ignored
    ("binary-data-as-text", lambda: binary_request([("images", "FP32", [1, 1, 32, 32], bytes(4096))],
                                                   outputs=[{"name": "boxes", "parameters": {"binary_data": "no"}}]),
     400, "binary_data must be true or false, got 'no'"),  # it was taken as true
]


@pytest.mark.parametrize(("make", "status", "phrase"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_tensors_get_a_4xx_naming_the_problem(server, make, status, phrase):
    body, headers = make()
    response = server.client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]


SIZE_AS_TEXT = json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 32, 32],
                                       "parameters": {"binary_data_size": "4096"}}]}).encode()


@pytest.mark.parametrize(
    ("headers", "body", "phrase"),
    [
        ({"Inference-Header-Content-Length": "999999"}, b'{"inputs": []}', "Inference-Header-Content-Length"),
        ({"Inference-Header-Content-Length": "14"}, b'{"inputs": []}' + bytes(10), "no input claims"),
        ({}, b"{not json", "not valid JSON"),
        ({}, b'{"inputs": 3}', '"inputs" list'),
        ({}, b'{"inputs":' + b"[" * 10_000 + b"]" * 10_000 + b"}", "not valid JSON"),  # past the recursion limit
        ({}, b'{"id":' + b"1" * 5000 + b',"inputs":[]}', "not valid JSON"),  # past Python's 4,300 digits
        ({}, b'{"inputs":[],"parameters":{"timeout":1' + b"0" * 400 + b"}}", "got none"),  # a timeout that overflows
        ({}, b'{"inputs":[],"parameters":{"timeout":NaN}}', "got nan"),  # it said "got -1000000000000000.0"
        ({}, b'{"inputs":[],"parameters":{"binary_data_output":"false"}}', "binary_data_output must be true or false"),
        ({"Inference-Header-Content-Length": str(len(SIZE_AS_TEXT))}, SIZE_AS_TEXT + bytes(4096),
         "binary_data_size must be a whole number"),
        ({"Inference-Header-Content-Length": "9" * 5000}, b'{"inputs": []}',
         "Inference-Header-Content-Length must be a whole number"),  # past Python's 4,300 digits: it was a 500
    ],
    ids=["header-longer-than-body", "unclaimed-binary", "not-json", "inputs-not-a-list", "nested-deep",
         "huge-integer", "huge-timeout", "nan-timeout", "all-binary-as-text", "size-as-text",
         "header-length-of-5000-digits"],
)
def test_framing_that_lies_is_refused(server, headers, body, phrase):
    before = server.metrics()
    response = server.client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == 400 and phrase in response.json()["error"], response.text
    refused = [metric_total(text, "cnnserve_requests_total", protocol="v2-rest", outcome="client_error")
               for text in (before, server.metrics())]
    assert refused[1] - refused[0] == 1  # counted, whether refused before the model was read or after


def test_unknown_model_is_404_before_the_data_is_read(server):
    response = server.client.post("/v2/models/nope/infer", content=b'{"inputs": [{"name": "x"}]}')
    assert response.status_code == 404 and "unknown model 'nope'" in response.json()["error"]
