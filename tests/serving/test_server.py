"""The real service over HTTP: predictions that are right, batches that form,
metrics that count, readiness that means it, and a clear 4xx for every bad
input, after which the server still answers."""

from __future__ import annotations

import gzip
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
from PIL import Image

from cnnserve.training.boxes import iou
from cnnserve.training.data.digits import load_source_digits, split_indices
from loadtests.digit_images import Condition, DigitFile, digit_files, render
from loadtests.local_server import MAX_BODY_BYTES as MAX_BODY
from tests.committed import INPUTS, VERSIONS
from tests.serving.helpers import GOOD, metric_total, png


@pytest.mark.parametrize(("model", "channels", "size"), [(name, *shape) for name, shape in INPUTS.items()])
def test_predictions_match_labels_and_boxes_across_sizes_and_formats(server, model, channels, size):
    hits, ious = [], []
    for file in digit_files(channels, size, count=36, seed=7, assorted=True):
        response = server.client.post("/predict", files={"image": ("d", file.data)}, data={"model": model})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model"] == model and answer["version"] == VERSIONS[model]
        hits.append(answer["label"] == str(file.label))
        got = answer["box"]
        ious.append(iou(np.array([[got["x1"], got["y1"], got["x2"], got["y2"]]]), file.box[None])[0])
    assert np.mean(hits) >= 0.9, f"accuracy {np.mean(hits):.3f}"
    assert np.mean(ious) >= 0.7, f"mean IoU {np.mean(ious):.3f}"


def picture(condition: Condition, digit_index: int, file_index: int) -> DigitFile:
    """One test-split digit drawn by the suite's renderer (not training's) under ``condition``."""
    digits, labels = load_source_digits()
    index = int(split_indices(len(digits), seed=0)["test"][digit_index])
    return render(digits[index], int(labels[index]), condition, np.random.default_rng([5, digit_index]), file_index)


def box_iou(answer: dict, file: DigitFile) -> float:
    got = answer["box"]
    return float(iou(np.array([[got["x1"], got["y1"], got["x2"], got["y2"]]]), file.box[None])[0])


def test_box_lands_on_the_drawn_digit_of_an_exif_rotated_non_square_photo(server):
    """A 3:2 photo stored sideways with EXIF orientation 6: the box comes back in the pixels a viewer sees."""
    sideways = Condition("sideways", "", (1.5, 1.5), (300, 300), (0.6, 0.6), "dark-on-light", photo=True,
                         formats=(("JPEG", 95),))
    file = picture(sideways, digit_index=3, file_index=0)  # every third photo carries an orientation tag
    assert Image.open(io.BytesIO(file.data)).getexif()[0x0112] == 6
    answer = server.client.post("/predict", files={"image": ("p.jpg", file.data)},
                                data={"model": "resnet18-digits"}).json()
    assert (answer["image_size"]["width"], answer["image_size"]["height"]) == file.size
    assert answer["label"] == str(file.label)
    assert box_iou(answer, file) >= 0.9


def test_a_small_digit_in_a_large_photo_gets_a_second_look(server):
    small = Condition("small", "", (4 / 3, 4 / 3), (900, 900), (0.12, 0.12), "dark-on-light",
                      formats=(("PNG", 0),))
    file = picture(small, digit_index=8, file_index=1)
    answer = server.client.post("/predict", files={"image": ("p.png", file.data)},
                                data={"model": "resnet18-digits"}).json()
    assert answer["timings"]["zoomed_images"] == 1
    assert answer["label"] == str(file.label)
    assert box_iou(answer, file) >= 0.8


def canvas_export(picture: Image.Image) -> Image.Image:
    """What an HTML canvas exports of the same drawing: black ink whose darkness is in the alpha channel alone,
    over transparent black."""
    darkness = Image.eval(picture.convert("L"), lambda v: 255 - v)
    return Image.merge("RGBA", [Image.new("L", picture.size, 0)] * 3 + [darkness])


def sixteen_bit(picture: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(picture.convert("L")).astype(np.uint16) * 257)


@pytest.mark.parametrize("reencode", [canvas_export, sixteen_bit])
def test_a_canvas_export_and_a_16_bit_scan_read_as_the_picture_they_show(server, reencode):
    """Dropping the alpha left a canvas's black ink on a black page, and 16-bit samples clipped to a white one:
    the same digit was read as a blank picture ("0" at 0.19, the box over everything)."""
    plain = Condition("plain", "", (1.4, 1.4), (240, 240), (0.5, 0.5), "dark-on-light", formats=(("PNG", 0),))
    for digit_index in range(6):
        file = picture(plain, digit_index, file_index=0)
        expected = server.client.post("/predict", files={"image": ("p.png", file.data)},
                                      data={"model": "resnet18-digits"}).json()
        answer = server.client.post("/predict", files={"image": ("p.png", png(reencode(Image.open(io.BytesIO(
            file.data)))))}, data={"model": "resnet18-digits"}).json()
        assert answer["label"] == expected["label"] == str(file.label)
        assert box_iou(answer, file) >= 0.8


def test_answer_has_the_documented_fields(server):
    answer = server.client.post("/predict", files={"image": ("a.png", GOOD)}, data={"top_k": "3"}).json()
    for key in ("model", "version", "label", "probability", "top_k", "box", "box_normalized", "timings"):
        assert key in answer
    assert len(answer["top_k"]) == 3
    assert answer["top_k"][0]["probability"] >= answer["top_k"][1]["probability"]
    assert set(answer["box"]) == {"x1", "y1", "x2", "y2"}
    assert {"decode_ms", "queue_ms", "compute_ms", "total_ms", "batch_images"} <= set(answer["timings"])


def test_predict_batch_answers_each_image_in_order(server):
    files = [f.data for f in digit_files(3, 64, count=6, seed=11, assorted=True)]
    response = server.client.post(
        "/predict_batch",
        files=[("images", (f"{i}", data)) for i, data in enumerate(files)],
        data={"model": "resnet18-digits"},
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 6
    for data, prediction in zip(files, predictions):
        alone = server.client.post("/predict", files={"image": ("a", data)}, data={"model": "resnet18-digits"}).json()
        assert prediction["label"] == alone["label"]
        assert prediction["probability"] == pytest.approx(alone["probability"], abs=1e-4)


def test_model_listing_shows_provider_metrics_and_status(server):
    listing = server.client.get("/models").json()
    names = {m["name"]: m for m in listing["models"]}
    assert {"lenet5-digits", "resnet18-digits", "vgg11-digits"} <= set(names)
    version = names["resnet18-digits"]["versions"][0]
    assert version["status"] == "ready"
    assert version["provider"] == "CPUExecutionProvider"
    assert version["metrics"]["conditions"]["results"]["photo-like"]["accuracy"] >= 0.97
    assert version["input"]["shape"] == [-1, 3, 64, 64]
    assert version["batching"]["max_batch_size"] > 1


def test_a_concurrent_burst_rides_in_common_batches(server):
    before = server.metrics()
    files = [f.data for f in digit_files(3, 64, count=16, seed=3)]

    def call(i: int) -> int:
        data = files[i % len(files)]
        return server.client.post("/predict", files={"image": ("a.png", data)}, data={"model": "resnet18-digits"}).status_code

    with ThreadPoolExecutor(max_workers=48) as pool:
        statuses = list(pool.map(call, range(192)))
    assert statuses == [200] * 192
    after = server.metrics()
    labels = {"model": "resnet18-digits", "version": str(VERSIONS["resnet18-digits"])}
    images = metric_total(after, "cnnserve_batch_size_images_sum", **labels) - metric_total(before, "cnnserve_batch_size_images_sum", **labels)
    batches = metric_total(after, "cnnserve_batch_size_images_count", **labels) - metric_total(before, "cnnserve_batch_size_images_count", **labels)
    assert images == 192
    assert images / batches > 1.5, f"mean batch {images / batches:.2f} images"


def test_the_start_log_says_how_the_server_sized_itself(server):
    """Once, from the process that starts the workers: a pod that starts fewer workers than expected says why.
    Judged against the worker processes that really run and the affinity read here."""
    (line,) = [line for line in server.log().splitlines() if "worker(s) of" in line]
    started = len(psutil.Process(server.process.pid).children())
    assert re.search(rf"\] {started} worker\(s\) of \d+ ONNX Runtime thread\(s\), for \d+ cores \(of "
                     rf"{os.cpu_count()} on the machine; CPU affinity {len(os.sched_getaffinity(0))}, cgroup CPU quota ",
                     line), line


def test_metrics_expose_requests_latency_queue_batches_inflight_and_readiness(server):
    server.client.post("/predict", files={"image": ("a.png", GOOD)})
    server.client.post("/predict", files={"image": ("a.txt", b"not an image")})
    text = server.metrics()
    for name in (
        "cnnserve_request_duration_seconds_bucket",
        "cnnserve_queue_duration_seconds_bucket",
        "cnnserve_compute_duration_seconds_bucket",
        "cnnserve_preprocess_duration_seconds_bucket",
        "cnnserve_batch_size_images_bucket",
        "cnnserve_inflight_requests",
    ):
        assert re.search(rf"^{name}{{.*model=\"lenet5-digits\"", text, re.M), name
    assert metric_total(text, "cnnserve_requests_total", model="lenet5-digits", outcome="success") >= 1
    assert metric_total(text, "cnnserve_requests_total", outcome="client_error") >= 1
    for model in ("lenet5-digits", "resnet18-digits", "vgg11-digits"):
        assert metric_total(text, "cnnserve_model_ready", model=model) == 1


@pytest.mark.parametrize(("route", "form", "outcome"), [
    ("/predict_batch", {"files": [("images", ("d.png", GOOD))] * 65}, "too_large"),  # over max_images_per_request
    ("/predict", {"data": {"image": "https://example.com/digit.png"}}, "client_error"),  # text where a file belongs
    ("/explain", {"content": b"raw bytes, not a form"}, "client_error"),
])
def test_a_form_refused_before_any_model_is_read_is_counted_under_model_unknown(server, route, form, outcome):
    before = server.metrics()
    response = server.client.post(route, **form)
    assert 400 <= response.status_code < 500 and response.json()["error"]
    counted = [metric_total(text, "cnnserve_requests_total", model="unknown", outcome=outcome)
               for text in (before, server.metrics())]
    assert counted[1] - counted[0] == 1


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/predict", {"POST"}),
    ("PUT", "/v2/models/lenet5-digits/infer", {"POST"}),
    ("DELETE", "/models", {"GET", "HEAD"}),
])
def test_a_wrong_method_gets_a_json_error_naming_the_allowed_ones(server, method, path, allowed):
    response = server.client.request(method, path)
    assert response.status_code == 405, response.text
    error = response.json()["error"]
    assert error.startswith(f"{method} is not allowed on {path}; allowed: ")
    assert set(error.rsplit("allowed: ", 1)[1].split(", ")) == set(response.headers["allow"].split(", ")) == allowed



@pytest.mark.parametrize(("method", "path"), [("GET", "/predictions"), ("POST", "/v2/models/lenet5-digits/infers"),
                                              ("GET", "/v2/models/lenet5-digits/versions/4/nope")])
def test_a_path_no_route_has_gets_a_json_404_naming_it(server, method, path):
    response = server.client.request(method, path)
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert response.json()["error"] == f"no route {method} {path} on this server; GET /openapi.json lists them"

BOMB = png(Image.new("1", (20_000, 20_000)))


@pytest.mark.parametrize(
    ("files", "data", "status", "phrase"),
    [
        ({"image": ("a.txt", b"plain text")}, {}, 415, "not a recognised image"),
        ({"image": ("a.png", GOOD[:60])}, {}, 400, "truncated"),
        ({"image": ("a.png", b"")}, {}, 400, "empty"),
        ({"image": ("a.ppm", b"P6\n4 4\n255\n" + bytes(48))}, {}, 415, "PPM"),
        ({"image": ("bomb.png", BOMB)}, {}, 413, "pixels"),
        ({"image": ("big.png", b"\x89PNG" + bytes(MAX_BODY + 10))}, {}, 413, "limit"),
        ({"image": ("a.png", GOOD)}, {"model": "resnet-9000"}, 404, "unknown model"),
        ({"image": ("a.png", GOOD)}, {"model": "lenet5-digits", "version": "7"}, 404, "no version 7"),
        ({"image": ("a.png", GOOD)}, {"top_k": "0"}, 400, "top_k"),
        ({"image": ("a.png", GOOD)}, {"top_k": "11"}, 400, "top_k"),
        ({"image": ("a.png", GOOD)}, {"top_k": "many"}, 400, "top_k must be a whole number"),
        ({"picture": ("a.png", GOOD)}, {}, 400, "unknown field(s) ['picture']"),
        ({}, {"model": "lenet5-digits"}, 400, "missing multipart file field 'image'"),
        ({}, {"image": "http://127.0.0.1:9/secret.png"}, 400, "must be an uploaded file, not text"),
    ],
    ids=["text", "truncated", "empty", "ppm", "pixel-bomb", "body-too-large", "unknown-model",
         "unknown-version", "top-k-zero", "top-k-too-big", "top-k-not-a-number", "unknown-field", "no-image",
         "image-as-url-text"],
)
def test_bad_requests_get_a_clear_4xx_and_the_server_carries_on(server, files, data, status, phrase):
    if files:
        response = server.client.post("/predict", files=files, data=data)
    else:  # a multipart body of text fields only
        response = server.client.post(
            "/predict", content=multipart_text(data), headers={"content-type": "multipart/form-data; boundary=b"}
        )
    assert response.status_code == status, response.text
    assert phrase.lower() in response.json()["error"].lower()
    good = server.client.post("/predict", files={"image": ("a.png", GOOD)})
    assert good.status_code == 200


@pytest.mark.parametrize("path", ["/predict", "/v2/models/lenet5-digits/infer", "/explain"])
def test_a_compressed_body_is_refused_as_such(server, path):
    """Read as it was, a gzipped form said "Expected boundary character 45, got 31" and gzipped JSON a UTF-8 error."""
    body = gzip.compress(b'{"inputs": []}')
    response = server.client.post(path, content=body, headers={"Content-Encoding": "gzip",
                                                               "Content-Type": "application/json"})
    assert response.status_code == 415
    assert "Content-Encoding gzip is not supported" in response.json()["error"]


def test_a_multipart_body_without_a_boundary_is_refused_by_name(server):
    response = server.client.post("/predict", content=b"--b--\r\n", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 400 and "no boundary" in response.json()["error"]


def multipart_text(fields: dict) -> bytes:
    parts = [f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + "--b--\r\n").encode()


def test_too_many_images_in_one_batch_call_is_refused(server):
    files = [("images", (f"{i}.png", GOOD)) for i in range(65)]
    response = server.client.post("/predict_batch", files=files)
    assert response.status_code == 413 and "limit is 64" in response.json()["error"]


def test_one_bad_image_in_a_batch_is_named_by_its_index(server):
    files = [("images", ("0.png", GOOD)), ("images", ("1.png", b"junk"))]
    response = server.client.post("/predict_batch", files=files)
    assert response.status_code == 415 and response.json()["error"].startswith("image 1:")
