"""The benchmark's no-op routes: only servers the benchmark starts answer them; the V2 one answers as the
model would, with zeros, without reaching the batcher."""

import copy

import httpx
import pytest

from cnnserve.serving.fastlane import ROUTES
from loadtests.bench.noop_routes import NOOP_SERVICE, noop, noop_infer, register
from loadtests.local_server import running_server
from tests.serving.helpers import metric_total, v2_grey


@pytest.mark.parametrize(("path", "handler", "params"), [
    ("/noop", noop, {}),
    ("/noop/v2/models/lenet5-digits/infer", noop_infer, {"name": "lenet5-digits"}),
    ("/noop/v2/models/lenet5-digits/versions/2/infer", noop_infer, {"name": "lenet5-digits", "version": "2"}),
])
def test_registering_adds_the_noop_routes_beside_the_real_ones(path, handler, params):
    routes = copy.deepcopy(ROUTES)
    register(routes)
    assert routes.find("POST", path) == (handler, params)
    assert routes.find("POST", "/v2/models/lenet5-digits/infer") == ROUTES.find("POST", "/v2/models/lenet5-digits/infer")
    assert ROUTES.find("POST", path) == (None, None), "the service's own routes are left as they were"


def test_the_benchmark_service_answers_them_and_the_v2_one_as_the_model_would_without_inference(tmp_path):
    with running_server(tmp_path, target=NOOP_SERVICE, serve="lenet5-digits") as server:
        bare = httpx.post(f"{server.url}/noop", content=b"x" * 4096, timeout=30)
        assert bare.status_code == 200 and bare.json() == {}
        noop_url = f"{server.url}/noop/v2/models/lenet5-digits/infer"
        answer = httpx.post(noop_url, json=v2_grey([2, 1, 32, 32]), timeout=30)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert outputs["probabilities"]["shape"] == [2, 10] and set(outputs["probabilities"]["data"]) == {0.0}
        assert outputs["boxes"]["shape"] == [2, 4]
        real = httpx.post(f"{server.url}/v2/models/lenet5-digits/infer", json=v2_grey([2, 1, 32, 32]), timeout=30)
        assert [o["shape"] for o in real.json()["outputs"]] == [o["shape"] for o in answer.json()["outputs"]]
        wrong_shape = httpx.post(noop_url, json=v2_grey([1, 1, 28, 28]), timeout=30)
        assert wrong_shape.status_code == 400 and "shape" in wrong_shape.json()["error"]
        metrics = server.metrics()
        assert 'protocol="noop-v2-rest"' in metrics
        batched = metric_total(metrics, "cnnserve_batch_size_images_sum", model="lenet5-digits")
        assert batched == 2, "only the real request reached the batcher"
