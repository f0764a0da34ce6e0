"""The fast lane: prediction routes skip BentoML's per-request middlewares (its
HTTP metrics do not count them) yet keep our limits; every other route, and
every route with ``fast_lane`` off, goes through BentoML's stack."""

import contextlib
import http.server
import json
import threading
import time

import httpx
import pytest

from cnnserve.serving.fastlane import ROUTES
from cnnserve.serving.routes import predict, predict_batch
from cnnserve.serving.v2.rest import infer, server_live
from loadtests.digit_images import digit_files
from loadtests.local_server import running_server
from tests.serving.helpers import metric_total, v2_grey


@pytest.mark.parametrize(("method", "path", "handler", "params"), [
    ("POST", "/predict", predict, {}),
    ("POST", "/predict_batch", predict_batch, {}),
    ("GET", "/v2/health/live", server_live, {}),
    ("POST", "/v2/models/lenet5-digits/infer", infer, {"name": "lenet5-digits"}),
    ("POST", "/v2/models/lenet5-digits/versions/2/infer", infer, {"name": "lenet5-digits", "version": "2"}),
])
def test_hot_routes_take_the_fast_lane(method, path, handler, params):
    assert ROUTES.find(method, path) == (handler, params)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/predict"), ("GET", "/models"), ("GET", "/metrics"), ("POST", "/v2/models/x/ready"),
    ("GET", "/v2/models/lenet5-digits/infer"), ("POST", "/noop"), ("POST", "/noop/v2/models/lenet5-digits/infer"),
])
def test_everything_else_goes_through_bentoml(method, path):
    """The benchmark's no-op routes among them: the service never registers them (tests/loadtests/test_noop_routes.py)."""
    assert ROUTES.find(method, path) == (None, None)


@pytest.fixture(scope="module")
def digit_png() -> bytes:
    return digit_files(channels=1, size=32, count=1)[0].data


def bentoml_counted(metrics: str, endpoint: str) -> bool:
    """Whether BentoML counted a served (200) request on ``endpoint`` (other tests on the shared server send it
    wrong methods, which BentoML's stack answers and counts)."""
    return any(line.startswith("bentoml_service_request_total") and f'endpoint="{endpoint}"' in line
               and 'http_response_code="200"' in line for line in metrics.splitlines())


def predict_once(url: str, digit_png: bytes) -> httpx.Response:
    return httpx.post(f"{url}/predict?model=lenet5-digits", files={"image": ("d.png", digit_png)}, timeout=30)


def test_paths_a_client_makes_up_add_no_metric_series(server):
    """BentoML labels its HTTP metrics with each request's raw path: 50 requests for made-up models' readiness
    grew /metrics by 2.2 MB, for good. Made-up paths, and the routes whose path holds a model's name, are answered
    in front of BentoML's stack, JSON as ever."""
    before = len(server.metrics())
    for i in range(20):
        made_up = f"made-up-{i}-" + "x" * 200
        for method, path, status in [("GET", f"/v2/models/{made_up}/ready", 404),
                                     ("GET", f"/v2/models/{made_up}/versions/1/config", 404),
                                     ("GET", f"/v2/models/{made_up}", 404),
                                     ("DELETE", f"/v2/models/{made_up}/stats", 405),
                                     ("POST", f"/v2/repository/models/{made_up}/load", 400),  # mode none
                                     ("GET", f"/{made_up}", 404)]:
            response = httpx.request(method, f"{server.url}{path}", timeout=30)
            assert response.status_code == status and response.json()["error"], (method, path, response.text)
    metrics = server.metrics()
    assert "made-up-" not in metrics and len(metrics) < before + 5000
    assert httpx.get(f"{server.url}/v2/models/lenet5-digits/ready", timeout=30).status_code == 200
    for path in ("/v2/health/live", "/v2/models/lenet5-digits/ready"):  # HEAD as GET, as Starlette's routes
        assert httpx.head(f"{server.url}{path}", timeout=30).status_code == 200, path


def test_fast_lane_predictions_skip_bentoml_middlewares_but_not_our_limits(server, digit_png):
    assert predict_once(server.url, digit_png).status_code == 200
    assert httpx.get(f"{server.url}/models", timeout=30).status_code == 200
    metrics = server.metrics()
    assert bentoml_counted(metrics, "/models") and not bentoml_counted(metrics, "/predict")
    assert 'cnnserve_requests_total{model="lenet5-digits"' in metrics
    before = server.metrics()
    too_big = httpx.post(f"{server.url}/predict", content=b"x" * (3 * 1024 * 1024), timeout=30)
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    counted = [metric_total(text, "cnnserve_requests_total", outcome="too_large", protocol="rest")
               for text in (before, server.metrics())]
    assert counted[1] - counted[0] == 1
    assert httpx.post(f"{server.url}/noop", content=b"{}", timeout=30).status_code in (404, 405)


def test_with_the_fast_lane_off_bentoml_sees_every_request(tmp_path, digit_png):
    with running_server(tmp_path, serve="lenet5-digits", fast_lane="false") as off:
        assert predict_once(off.url, digit_png).status_code == 200
        v2 = httpx.post(f"{off.url}/v2/models/lenet5-digits/infer", json=v2_grey([1, 1, 32, 32]), timeout=30)
        assert v2.status_code == 200 and v2.json()["outputs"][0]["shape"] == [1, 10]
        metrics = off.metrics()
        assert bentoml_counted(metrics, "/predict") and bentoml_counted(metrics, "/v2/models/lenet5-digits/infer")


ALLOWED_ORIGIN = "https://app.example"
CORS_CONFIG = f"""\
services:
  cnnserve:
    http:
      cors:
        enabled: true
        access_control_allow_origins: ["{ALLOWED_ORIGIN}"]
        access_control_allow_methods: ["GET", "POST", "OPTIONS"]
        access_control_allow_headers: ["Content-Type", "Authorization"]
"""


@pytest.mark.parametrize("key", [None, "a-key"], ids=["open", "with-api-keys"])
def test_cors_configured_in_bentoml_applies_to_the_fast_lane_routes(tmp_path, monkeypatch, key):
    """With API keys too: a browser's preflight carries no key (the Fetch standard leaves credentials out of it), so
    it must pass the key check; refused with 401, no browser on another origin could call the API at all."""
    config = tmp_path / "bentoml.yaml"
    config.write_text(CORS_CONFIG)
    monkeypatch.setenv("BENTOML_CONFIG", str(config))
    (file,) = digit_files(channels=1, size=32, count=1)
    keys = {"api_keys": key} if key else {}
    with running_server(tmp_path, serve="lenet5-digits", workers="1", **keys) as server, \
            httpx.Client(base_url=server.url, timeout=30,
                         headers={"Authorization": f"Bearer {key}"} if key else {}) as client:
        def calls(origin: str) -> dict[str, httpx.Response]:
            preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization"}
            return {
                "preflight": httpx.options(f"{server.url}/predict", headers=preflight),  # no key, as a browser's
                "preflight of a repository route": httpx.options(f"{server.url}/models", headers=preflight),
                "predict": client.post("/predict", files={"image": ("d.png", file.data)},
                                       data={"model": "lenet5-digits"}, headers={"Origin": origin}),
                "v2 infer": client.post("/v2/models/lenet5-digits/infer", json=v2_grey([1, 1, 32, 32]),
                                        headers={"Origin": origin}),
                "models": client.get("/models", headers={"Origin": origin}),
            }

        for name, answer in calls(ALLOWED_ORIGIN).items():
            assert answer.status_code == 200, (name, answer.text)
            assert answer.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN, name
        for name, answer in calls("https://elsewhere.example").items():
            assert "access-control-allow-origin" not in answer.headers, name
        assert client.post("/predict", files={"image": ("d.png", file.data)},
                           data={"model": "lenet5-digits"}).status_code == 200  # no Origin: not a CORS request
        if key:  # a refusal a browser can read: it carries CORS headers too, on either side of the fast lane
            for path in ("/models", "/v2/models/lenet5-digits/ready"):
                refused = httpx.get(f"{server.url}{path}", headers={"Origin": ALLOWED_ORIGIN})
                assert refused.status_code == 401, path
                assert refused.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN, path


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@contextlib.contextmanager
def span_collector():
    """A Zipkin endpoint on 127.0.0.1 that keeps every span posted to it."""
    spans = []

    class Collect(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            spans.extend(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api/v2/spans", spans
    finally:
        server.shutdown()


def test_fast_lane_routes_keep_bentoml_tracing_and_access_log(tmp_path, monkeypatch, digit_png):
    """With tracing and the access log on in BentoML, a fast-lane request continues the caller's W3C trace in a
    span of its own, sent to the configured exporter, and gets its access log line."""
    with span_collector() as (endpoint, spans):
        config = tmp_path / "bentoml.yaml"
        config.write_text("services:\n  cnnserve:\n    tracing:\n      exporter_type: zipkin\n      sample_rate: 1.0\n"
                          f"      zipkin: {{endpoint: '{endpoint}'}}\n")
        monkeypatch.setenv("BENTOML_CONFIG", str(config))
        with running_server(tmp_path, serve="lenet5-digits", workers="1", access_log="true") as server:
            traceparent = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
            assert httpx.post(f"{server.url}/predict?model=lenet5-digits", files={"image": ("d.png", digit_png)},
                              headers=traceparent, timeout=30).status_code == 200
            assert httpx.post(f"{server.url}/v2/models/lenet5-digits/infer", json=v2_grey([1, 1, 32, 32]),
                              headers=traceparent, timeout=30).status_code == 200
            deadline = time.monotonic() + 20  # the exporter sends a batch every 5 s
            while time.monotonic() < deadline and len({s["name"] for s in spans if s["traceId"] == TRACE_ID}) < 2:
                time.sleep(0.5)
            log = server.log()
    ours = [s for s in spans if s["traceId"] == TRACE_ID and s.get("parentId") == PARENT_SPAN]
    assert {s["name"] for s in ours} >= {"POST /predict", "POST /v2/models/lenet5-digits/infer"}, spans
    access = [line for line in log.splitlines() if "path=/predict" in line or "path=/v2/models" in line]
    assert any("status=200" in line for line in access if "path=/predict" in line), log[-3000:]
    assert any("status=200" in line for line in access if "path=/v2/models/lenet5-digits/infer" in line)
