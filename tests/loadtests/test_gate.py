"""The load gate end to end: Locust headless against real servers, through
``python -m loadtests.gate`` as a CI job would run it.

Kept short (a few seconds of load each, five users) for this 2-core machine.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from loadtests.local_server import REPO_ROOT, running_server
from tests.committed import VERSIONS

REQUEST_NAMES = {
    "PredictUser": "POST /predict",
    "PredictBatchUser": "POST /predict_batch",
    "V2JsonUser": "POST /v2/models/[model]/infer (json)",
    "V2BinaryUser": "POST /v2/models/[model]/infer (binary)",
    "GrpcUser": "grpc ModelInfer",
}
EVIDENCE = ["locust_stats.csv", "locust_failures.csv", "locust_stats_history.csv", "report.html",
            "summary.json", "summary.md", "locust.log"]
API_KEY = "gate-key-5e0a11"


def gate(server, out, *arguments, env=None) -> tuple[int, dict]:
    command = [sys.executable, "-m", "loadtests.gate", "--host", server.url, "--grpc", server.grpc_address,
               "--out", str(out), *arguments]
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})})
    summary = out / "summary.json"
    assert summary.exists(), f"no summary; gate said:\n{result.stdout}\n{result.stderr}"
    return result.returncode, json.loads(summary.read_text())


def rows(summary: dict) -> dict[str, dict]:
    return {f"{r['type']} {r['name']}": r for r in summary["requests"]}


def test_every_scenario_passes_against_the_real_service(server, tmp_path):
    code, summary = gate(server, tmp_path, "--model", "resnet18-digits", "--users", "5", "--run-time", "5s",
                         "--tensor-batch", "2", "--max-failure-ratio", "0", "--max-p95-ms", "10000")
    assert code == 0, summary
    assert all((tmp_path / name).stat().st_size > 0 for name in EVIDENCE)
    assert summary["passed"] and summary["scenarios"] == sorted(REQUEST_NAMES)
    by_name = rows(summary)
    for name in REQUEST_NAMES.values():
        assert by_name[name]["requests"] > 0 and by_name[name]["failures"] == 0, by_name[name]
    assert {c["name"]: c["passed"] for c in summary["checks"]} == {
        "every scenario sent requests": True, "max failure ratio": True, "max p95 ms": True}
    assert "# Load gate: PASS" in (tmp_path / "summary.md").read_text()


def test_an_unmet_latency_threshold_fails_the_gate(server, tmp_path):
    """Through a stage table, with the V2 scenarios picked by Locust's tags."""
    code, summary = gate(server, tmp_path, "--model", "lenet5-digits", "--stages", "smoke", "--run-time", "3s",
                         "--max-p95-ms", "0.001", "--", "--tags", "v2")
    assert code == 1
    checks = {c["name"]: c for c in summary["checks"]}
    assert not checks["max p95 ms"]["passed"] and "over the limit" in checks["max p95 ms"]["reason"]
    assert checks["max failure ratio"]["passed"] and checks["every scenario sent requests"]["passed"]
    assert summary["scenarios"] == ["GrpcUser", "V2BinaryUser", "V2JsonUser"] and summary["load"] == "stages smoke"
    assert all(r["requests"] > 0 and r["failures"] == 0 for r in summary["requests"])


def test_a_model_the_server_does_not_serve_stops_the_run(server, tmp_path):
    code, summary = gate(server, tmp_path, "--model", "resnet-9000", "--users", "5", "--run-time", "30s")
    assert code == 2 and summary["total"]["requests"] == 0
    assert "does not serve 'resnet-9000'" in summary["checks"][0]["reason"]


@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory):
    """lenet5-digits with its card's labels shifted by one, as a mis-edited card would do, behind an API key."""
    root = tmp_path_factory.mktemp("mislabelled")
    source = REPO_ROOT / "models" / "lenet5-digits" / str(VERSIONS["lenet5-digits"])
    target = root / "models" / "lenet5-digits" / str(VERSIONS["lenet5-digits"])
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.name in ("card.json", "model.onnx"):
            (target / file.name).write_bytes(file.read_bytes())
    card = json.loads((target / "card.json").read_text())
    card["labels"] = card["labels"][1:] + card["labels"][:1]
    (target / "card.json").write_text(json.dumps(card))
    with running_server(root, models_dir=root / "models", workers="1", api_keys=API_KEY) as server:
        yield server


def test_wrong_answers_count_as_failures_in_every_scenario(mislabelled, tmp_path):
    """Every answer names the wrong digit; the key from the environment gets every request through."""
    began = time.monotonic()
    code, summary = gate(mislabelled, tmp_path, "--model", "lenet5-digits", "--users", "5", "--run-time", "90s",
                         "--max-requests", "100", env={"CNNSERVE_CLIENT_API_KEY": API_KEY})
    assert code == 1 and time.monotonic() - began < 45, "--max-requests ended the run long before --run-time"
    assert 100 <= summary["total"]["requests"] < 200, "a few more may finish while the users stop"
    by_name = rows(summary)
    for name in REQUEST_NAMES.values():
        assert by_name[name]["requests"] > 0 and by_name[name]["failures"] == by_name[name]["requests"], by_name[name]
    assert all("wrong label" in e["error"] for e in summary["errors"]), summary["errors"]
    failure_check = next(c for c in summary["checks"] if c["name"] == "max failure ratio")
    assert not failure_check["passed"]
