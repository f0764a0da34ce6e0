"""A service whose repository holds a broken model still starts, says which
model is broken and why, and serves the rest; readiness means warmed up; and
with batching switched off it still answers."""

import contextlib

import httpx
import pytest

from loadtests.local_server import running_server, wait_ready
from tests.committed import VERSIONS
from tests.serving.helpers import GOOD


@pytest.fixture(scope="module")
def degraded(tmp_path_factory):
    import shutil

    from tests.conftest import MODELS_DIR

    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(MODELS_DIR / "lenet5-digits", root / "lenet5-digits")
    shutil.copytree(MODELS_DIR / "lenet5-digits", root / "tampered")
    with (root / "tampered" / str(VERSIONS["lenet5-digits"]) / "model.onnx").open("r+b") as f:
        f.seek(1000)
        f.write(b"tampered")
    with running_server(tmp_path_factory.mktemp("server"), wait=False, models_dir=root, batching="false") as server:
        wait_ready(server.url, server.process, server.log_path)
        yield server


def test_the_broken_model_is_reported_with_its_reason(degraded):
    listing = degraded.client.get("/models").json()
    tampered = next(m for m in listing["models"] if m["name"] == "tampered")["versions"][0]
    assert tampered["status"] == "failed" and "sha256" in tampered["reason"]
    assert f"model tampered/{VERSIONS['lenet5-digits']} refused" in degraded.log()


def test_the_broken_model_answers_503_with_the_reason(degraded):
    response = degraded.client.post("/predict", files={"image": ("a.png", GOOD)}, data={"model": "tampered"})
    assert response.status_code == 503 and "sha256" in response.json()["error"]


def test_the_healthy_model_serves_without_batching(degraded):
    response = degraded.client.post("/predict", files={"image": ("a.png", GOOD)}, data={"model": "lenet5-digits"})
    assert response.status_code == 200
    assert response.json()["timings"]["batch_images"] == 1


def test_ready_only_once_every_model_has_loaded_and_warmed_up(tmp_path):
    from loadtests.local_server import running_server as start

    with start(tmp_path, wait=False) as server:
        wait_ready(server.url, server.process, server.log_path)
        listing = server.client.get("/models").json()
        assert all(v["status"] == "ready" for m in listing["models"] for v in m["versions"])
        assert server.client.get("/livez").status_code == 200


@pytest.mark.parametrize("case", ["every-model-refused", "the-named-model-absent"])
def test_not_ready_while_no_model_serves(tmp_path, case):
    """A pod whose every model was refused took traffic, answering only 503: its readiness now says so, while
    its liveness stays (a restart would not mend a bad file)."""
    import shutil
    import time

    from tests.conftest import MODELS_DIR

    root = tmp_path / "repo"
    shutil.copytree(MODELS_DIR / "lenet5-digits", root / "tampered")
    with (root / "tampered" / str(VERSIONS["lenet5-digits"]) / "model.onnx").open("r+b") as f:
        f.seek(1000)
        f.write(b"tampered")
    settings = {"serve": "nope"} if case == "the-named-model-absent" else {}
    with running_server(tmp_path, wait=False, models_dir=root, **settings) as server:
        deadline, listing = time.monotonic() + 60, None
        while listing is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                listing = server.client.get("/models").json()
            time.sleep(0.2)
        assert listing["failed"] or any(v["status"] == "failed" for m in listing["models"] for v in m["versions"])
        time.sleep(2)  # every worker has settled its models by now; none serves
        for _ in range(6):  # on fresh connections, which the workers share
            with httpx.Client(base_url=server.url, timeout=10) as client:
                assert client.get("/readyz").status_code == 503
                assert client.get("/v2/health/ready").status_code != 200  # V2's readiness agrees
                assert client.get("/livez").status_code == 200
