"""Models that change while the server runs (``model_control_mode: poll``): a new version folder serves within
a few polls, once loaded, checked and warmed; a broken one is refused with its reason while the version before it
keeps serving; a removed one can no longer be reached. A real server with two workers, each converging on its own;
every request on a new connection, so both answer."""

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from loadtests.digit_images import digit_files
from loadtests.local_server import REPO_ROOT, running_server
from loadtests.triton_tools import TRITON_PYTHON, require
from tests.committed import VERSIONS
from tests.serving.helpers import metric_total

MODEL = "lenet5-digits"


def answered_versions(server, requests: int = 12, version: int | None = None) -> set[int]:
    png = digit_files(1, 32, count=1)[0].data
    query = f"?model={MODEL}" + (f"&version={version}" if version else "")
    versions = set()
    for _ in range(requests):
        response = httpx.post(f"{server.url}/predict{query}", files={"image": ("digit.png", png)}, timeout=30)
        assert response.status_code == 200, response.text
        versions.add(response.json()["version"])
    return versions


def wait_for(probe, until=bool, seconds: float = 15.0):
    """Probe every quarter second until ``until(probe())`` holds; a timeout names what was seen last."""
    deadline = time.monotonic() + seconds
    while not until(seen := probe()):
        assert time.monotonic() < deadline, f"not within {seconds} s; last seen: {seen!r}"
        time.sleep(0.25)
    return seen


def listed(server) -> list[dict]:
    (entry,) = [m for m in httpx.get(f"{server.url}/models", timeout=30).json()["models"] if m["name"] == MODEL]
    return entry["versions"]


def refusal(server, key: str) -> str | None:
    listing = httpx.get(f"{server.url}/models", timeout=30).json()
    return next((f["reason"] for f in listing["failed"] if f["model"] == key), None)


def test_versions_come_and_go_with_their_folders(repo_copy, tmp_path):
    old = VERSIONS[MODEL]
    repo_copy(MODEL)
    settings = {"models_dir": str(repo_copy.root), "workers": "2", "threads": "1", "model_control_mode": "poll",
                "repository_poll_seconds": "0.5"}
    with running_server(tmp_path, **settings) as server:
        assert answered_versions(server) == {old}

        repo_copy(MODEL, as_version=old + 1)
        wait_for(lambda: answered_versions(server), until=lambda seen: seen == {old + 1})

        broken = repo_copy(MODEL, as_version=old + 2)
        with (broken / "model.onnx").open("r+b") as model:
            model.seek(-16, 2)
            model.write(b"\0" * 16)
        assert "sha256" in wait_for(lambda: refusal(server, f"{MODEL}/{old + 2}"))
        assert answered_versions(server) == {old + 1}  # the broken version never took traffic

        shutil.rmtree(repo_copy.root / MODEL / str(old + 1))
        wait_for(lambda: answered_versions(server), until=lambda seen: seen == {old})
        gone = httpx.post(f"{server.url}/predict?model={MODEL}&version={old + 1}",
                          files={"image": ("digit.png", digit_files(1, 32, count=1)[0].data)}, timeout=30)
        assert gone.status_code == 404 and f"no version {old + 1}" in gone.json()["error"]


def test_a_roll_under_load_loses_no_request(repo_copy, tmp_path):
    """The Locust gate (8 users, /predict and gRPC) runs while a new version is copied in, then a corrupt one, then
    the old version's folder is removed: no request fails, the answers move to the new version within 15 s, the
    corrupt one is refused while the new keeps serving, and the old one drains and goes."""
    old = VERSIONS[MODEL]
    repo_copy(MODEL)
    settings = {"models_dir": str(repo_copy.root), "workers": "2", "threads": "1", "model_control_mode": "poll",
                "repository_poll_seconds": "0.5"}
    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server", **settings) as server:
        out = tmp_path / "gate"
        command = [sys.executable, "-m", "loadtests.gate", "--host", server.url, "--grpc", server.grpc_address,
                   "--model", MODEL, "--scenario", "predict,grpc", "--users", "8", "--run-time", "20s",
                   "--rolling", "--max-failure-ratio", "0", "--out", str(out)]
        gate = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(4)
            repo_copy(MODEL, as_version=old + 1)
            copied = time.monotonic()
            wait_for(lambda: answered_versions(server, requests=6), until=lambda seen: seen == {old + 1})
            assert time.monotonic() - copied < 15
            broken = repo_copy(MODEL, as_version=old + 2)
            (broken / "model.onnx").write_bytes(b"not a model")
            wait_for(lambda: refusal(server, f"{MODEL}/{old + 2}"))
            assert answered_versions(server, requests=6) == {old + 1}
            shutil.rmtree(repo_copy.root / MODEL / str(old))  # the old version drains and goes
            wait_for(lambda: [v["version"] for v in listed(server)], until=lambda seen: seen == [old + 1])
            output, _ = gate.communicate(timeout=180)
        finally:
            gate.kill()
        summary = json.loads((out / "summary.json").read_text())
        assert gate.returncode == 0 and summary["passed"], output[-3000:]
        assert summary["total"]["failures"] == 0 and all(r["requests"] > 0 for r in summary["requests"])


def test_explicit_mode_loads_and_unloads_in_every_worker_through_the_repository_api(repo_copy, tmp_path):
    """Triton's repository extension: nothing loads at start but what ``serve`` names; an unload or a load through
    the API answers once every worker has done it (requests on new connections reach both workers)."""
    repo_copy(MODEL)
    repo_copy("resnet18-digits")
    settings = {"models_dir": str(repo_copy.root), "workers": "2", "threads": "1", "model_control_mode": "explicit",
                "serve": MODEL}
    with running_server(tmp_path, **settings) as server:
        states = {e["name"]: e["state"] for e in httpx.post(f"{server.url}/v2/repository/index", timeout=30).json()}
        assert states == {MODEL: "READY", "resnet18-digits": "UNAVAILABLE"}  # in the folder, not asked for

        assert metric_total(server.metrics(), "cnnserve_model_precision", model=MODEL) == 1  # one variant served
        assert httpx.post(f"{server.url}/v2/repository/models/{MODEL}/unload", timeout=60).status_code == 200
        for _ in range(8):
            assert predict_status(server) == 404
        assert metric_total(server.metrics(), "cnnserve_model_precision", model=MODEL) == 0  # none, once unloaded
        assert httpx.post(f"{server.url}/v2/repository/models/{MODEL}/load", timeout=300).status_code == 200
        assert answered_versions(server) == {VERSIONS[MODEL]}
        assert metric_total(server.metrics(), "cnnserve_model_precision", model=MODEL) == 1

        missing = httpx.post(f"{server.url}/v2/repository/models/nope/load", timeout=30)
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
        broken = repo_copy(MODEL, as_name="broken")
        (broken / "card.json").write_text("{not json")
        refused = httpx.post(f"{server.url}/v2/repository/models/broken/load", timeout=60)
        assert refused.status_code == 400 and "card.json is not valid JSON" in refused.json()["error"]
        index = httpx.post(f"{server.url}/v2/repository/index", timeout=30).json()
        assert [(e["state"], e["reason"]) for e in index if e["name"] == "broken"] == [("UNAVAILABLE", "unloaded")]
        result = subprocess.run([str(require(TRITON_PYTHON)), str(REPO_ROOT / "tests/serving/v2/tritonclient_repository.py"),
                                 server.url.removeprefix("http://"), server.grpc_address, MODEL],
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("PASS") == 2


def test_without_explicit_mode_the_repository_api_refuses_to_load(server):
    answer = httpx.post(f"{server.url}/v2/repository/models/{MODEL}/unload", timeout=30)
    assert answer.status_code == 400 and "model_control_mode: explicit" in answer.json()["error"]


def predict_status(server) -> int:
    return httpx.post(f"{server.url}/predict?model={MODEL}", files={"image": ("digit.png", digit_files(1, 32, count=1)[0].data)},
                      timeout=30).status_code


def test_latest_one_unloads_the_old_version_only_once_the_new_one_serves(repo_copy, tmp_path):
    old = VERSIONS[MODEL]
    repo_copy(MODEL)
    settings = {"models_dir": str(repo_copy.root), "workers": "1", "threads": "1", "model_control_mode": "poll",
                "repository_poll_seconds": "0.5", "version_policy": "latest:1"}
    with running_server(tmp_path, **settings) as server:
        broken = repo_copy(MODEL, as_version=old + 1)
        (broken / "model.onnx").write_bytes(b"not a model")
        wait_for(lambda: refusal(server, f"{MODEL}/{old + 1}"))
        assert [v["version"] for v in listed(server)] == [old]  # outside the policy now, but nothing else serves
        shutil.rmtree(broken)
        repo_copy(MODEL, as_version=old + 2)
        wait_for(lambda: [v["version"] for v in listed(server)], until=lambda seen: seen == [old + 2])
        assert answered_versions(server, requests=4) == {old + 2}
        (entry,) = [m for m in httpx.get(f"{server.url}/models", timeout=30).json()["models"] if m["name"] == MODEL]
        assert entry["version_policy"] == "latest:1"


def test_an_unload_answers_every_queued_request_and_refuses_the_later_ones_by_name(repo_copy, tmp_path):
    """32 clients asking ResNet-18 again and again (their requests queued behind each other's batches) while the
    model is unloaded through the API: each one is either answered (it was admitted before) or refused with a 404 naming the model; none is
    lost, none fails any other way."""
    repo_copy("resnet18-digits")
    settings = {"models_dir": str(repo_copy.root), "workers": "1", "model_control_mode": "explicit",
                "serve": "resnet18-digits"}
    png = digit_files(3, 64, count=1)[0].data
    with running_server(tmp_path, **settings) as server:
        answers: list[tuple[int, str]] = []
        unloaded_at = [float("inf")]

        def client() -> None:  # asks again and again until a second after the unload has answered
            while time.monotonic() < unloaded_at[0] + 1:
                answer = httpx.post(f"{server.url}/predict?model=resnet18-digits", files={"image": ("d.png", png)},
                                    timeout=60)
                answers.append((answer.status_code, answer.text))

        with ThreadPoolExecutor(32) as pool:
            clients = [pool.submit(client) for _ in range(32)]
            time.sleep(1.0)
            assert httpx.post(f"{server.url}/v2/repository/models/resnet18-digits/unload", timeout=120).status_code == 200
            unloaded_at[0] = time.monotonic()
            for running in clients:
                running.result()
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 404}, {s for s in statuses if s not in (200, 404)}
    assert statuses.count(200) > 0 and statuses.count(404) > 0
    assert all("resnet18-digits" in text for status, text in answers if status == 404)
