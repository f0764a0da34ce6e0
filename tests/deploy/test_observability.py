"""Observability, for real: the dashboard only asks for metrics the running
service exposes, promtool accepts the Prometheus configuration, and a real
Prometheus scraping the service sees the requests a test sends and answers
every dashboard query with data."""

import json
import re
import shutil
import subprocess
import time

import httpx
import pytest

from loadtests.local_server import REPO_ROOT, free_port
from tests.serving.helpers import GOOD

COMPOSE = REPO_ROOT / "deploy" / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "cnnserve.json"


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_dashboard_query_names_a_metric_the_service_exposes(server):
    server.client.post("/predict", files={"image": ("a.png", GOOD)})
    server.client.post("/predict", files={"image": ("a.txt", b"not an image")})
    exposed = set(re.findall(r"^(cnnserve_\w+?)(?:\{| )", server.metrics(), re.M))
    queries = dashboard_queries()
    assert len(queries) >= 8
    for query in queries:
        for name in re.findall(r"\bcnnserve_\w+", query):
            assert name in exposed, f"{name} (in {query!r}) is not exposed by the service"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: `make test` installs Debian's prometheus package"
    return path


def test_promtool_accepts_the_prometheus_config():
    result = subprocess.run([tool("promtool"), "check", "config", str(COMPOSE / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def prometheus(server, tmp_path):
    """Debian's prometheus on 127.0.0.1, scraping the test server every second."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: cnnserve\n    static_configs: [{{targets: ['{server.url.removeprefix('http://')}']}}]\n"
    )
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address={address}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://{address}", timeout=10)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and query(client, 'up{job="cnnserve"}') != 1:
            time.sleep(0.5)
        assert query(client, 'up{job="cnnserve"}') == 1, "prometheus never scraped the service"
        yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def query(client: httpx.Client, promql: str) -> float | None:
    try:
        result = client.get("/api/v1/query", params={"query": promql}).json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    return float(result[0]["value"][1]) if result else None


def test_prometheus_sees_the_requests_sent(server, prometheus):
    served = 'sum(cnnserve_requests_total{model="lenet5-digits",outcome="success",protocol="rest"})'
    time.sleep(1.5)
    before = query(prometheus, served) or 0.0
    for _ in range(40):
        assert server.client.post("/predict", files={"image": ("a.png", GOOD)},
                                  data={"model": "lenet5-digits"}).status_code == 200
    time.sleep(3)
    assert query(prometheus, served) - before == 40
    rate = query(prometheus, f"sum(rate({served.removeprefix('sum(')[:-1]}[10s]))")
    assert rate and rate > 0
    p99 = query(prometheus, 'histogram_quantile(0.99, sum by (le) (rate(cnnserve_request_duration_seconds_bucket'
                            '{model="lenet5-digits",outcome="success"}[10s])))')
    assert p99 is not None and 0 < p99 < 1.0


def test_prometheus_answers_every_dashboard_query_with_data(server, prometheus):
    for _ in range(10):
        server.client.post("/predict", files={"image": ("a.png", GOOD)}, data={"model": "lenet5-digits"})
        server.client.post("/predict", files={"image": ("a.txt", b"not an image")}, data={"model": "lenet5-digits"})
        time.sleep(0.3)
    time.sleep(2)
    for promql in dashboard_queries():
        answer = prometheus.get("/api/v1/query", params={"query": promql}).json()
        assert answer["status"] == "success", f"{promql!r}: {answer}"
        assert answer["data"]["result"], f"{promql!r} gives no series"
