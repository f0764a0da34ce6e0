"""``make gpu-check``, rehearsed where there is no GPU: the same steps on the CPU provider (ONNX Runtime on the test
split, a real server's ``/models``, the Python load generator or wrk against it) write the report; a provider this
ONNX Runtime lacks fails the check at once instead of passing on the CPU; on a host with an NVIDIA GPU the real check
runs (skipped here, with the reason)."""

import json
import shutil
import subprocess
import sys

import pytest

from cnnserve.serving.runtime import cuda_device_count
from loadtests.bench.machine import memory_of
from loadtests.gpu_check import device_report, main
from loadtests.local_server import REPO_ROOT

ON_A_GPU = pytest.mark.skipif(cuda_device_count() == 0, reason="needs an NVIDIA GPU and the gpu extra (make gpu-check)")


def gpu_check(tmp_path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "loadtests.gpu_check", "--models", "lenet5-digits", "--variants", "fp32",
               "--throughput-models", "lenet5-digits", "--concurrency", "1", "8", "--seconds", "1",
               "--batch-sizes", "1", "4", "--bench-dir", str(tmp_path / "no-bench-models"), "--out", str(tmp_path),
               *args]
    return subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_the_check_rehearsed_on_the_cpu_writes_its_report(tmp_path):
    result = gpu_check(tmp_path, "--providers", "CPUExecutionProvider", "--images-per-request", "1", "3",
                       "--client", "python", "--workers", "1", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["served_models"]["lenet5-digits"]["provider"] == "CPUExecutionProvider"
    (accuracy,) = report["accuracy"]
    assert accuracy["passed"] and accuracy["accuracy"] == accuracy["card_fp32_accuracy"]  # the card was measured so
    # each server answered distinct images batched together as ONNX Runtime does them in process
    assert [(r["model"], r["workers"], r["passed"]) for r in report["answers"]] == \
        [("lenet5-digits", 1, True), ("lenet5-digits", 2, True)]
    assert all(r["neighbour_difference"] > 0.01 for r in report["answers"])  # digits, whose answers differ
    served = report["throughput"]["lenet5-digits"]["served"]
    series = [(1, 1), (1, 8), (3, 1), (3, 8)]  # one server of one worker, then one of two
    assert [(r["workers"], r["images_per_request"], r["concurrency"]) for r in served] == \
        [(1, *row) for row in series] + [(2, *row) for row in series]
    assert [r["workers_sampled"] for r in served] == [1] * 4 + [2] * 4  # the cores read are those of its workers
    # the shipping settings unless asked otherwise (cuda_graphs on, which does nothing on the CPU)
    assert {(r["gpu_batch_shapes"], r["cuda_graphs"]) for r in served} == {("powers_of_two", "on")}
    assert not report["throughput"]["lenet5-digits"]["in_process"][0]["cuda_graphs"]  # measured without graphs too
    assert all(r["throughput_rps"] > 0 and r["errors"] == 0 and r["mean_batch"] >= 1 for r in served)
    assert all(r["images_per_s"] == r["images_per_request"] * r["throughput_rps"] for r in served)
    assert all(r["client"] == "python" and r["client_cpu_ms_per_request"] > 0 for r in served)
    # the workers' cores, read while the load ran: the loops parsed requests, none more than its one thread can
    assert all(0.05 < r["busiest_loop_cores"] <= min(1.05, r["loops_cores"]) for r in served)
    assert all(r["loops_cores"] <= r["workers_sampled"] * 1.05 and r["others_cores"] >= 0 for r in served)
    assert served[2]["mean_batch"] >= 3  # a request's images are batched together
    # each server's GPU memory, read after its loads: servers on the CPU provider hold none
    assert [(r["workers"], r["workers_running"]) for r in report["gpu_memory"]] == [(1, 1), (2, 2)]
    assert all(r["mib"] in (None, 0.0) for r in report["gpu_memory"])  # None: no nvidia-smi here
    table = (tmp_path / "gpu-check.md").read_text()
    assert "| every model served on the provider asked, none degraded |" in table and "| yes |" in table
    assert (tmp_path / "gpu-check.png").read_bytes().startswith(b"\x89PNG")

    # a run stopped during its second server: the table and plot come from what it saved
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    report["throughput"]["lenet5-digits"]["served"] = served[:5]
    (stopped / "gpu-check.json").write_text(json.dumps({**report, "finished": False}))
    assert main(["--report-from", str(stopped / "gpu-check.json")]) == 1
    assert "**Stopped before the end**" in (stopped / "gpu-check.md").read_text()
    assert (stopped / "gpu-check.png").read_bytes().startswith(b"\x89PNG")
    # ... or while its first server was still up: in process is measured once a server has stopped
    del report["throughput"]["lenet5-digits"]["in_process"]
    (stopped / "gpu-check.json").write_text(json.dumps({**report, "finished": False}))
    assert main(["--report-from", str(stopped / "gpu-check.json")]) == 1
    assert "/ not measured (stopped first) | no |" in (stopped / "gpu-check.md").read_text()


def test_a_servers_gpu_memory_is_its_workers_sum_in_nvidia_smis_list():
    listing = "4101, 5120\n4102, 4990\n999, 70000\n"  # --query-compute-apps=pid,used_memory, another process last
    assert memory_of(listing, {4101, 4102}) == 10110.0
    assert memory_of(listing, {1}) == 0.0  # a server on the CPU
    assert memory_of("4101, [N/A]\n", {4101}) is None  # a driver that cannot say is not read as none


def test_a_run_stopped_before_its_first_server_still_gets_a_report(tmp_path):
    saved = {"device": device_report("CPUExecutionProvider", "0000000"), "client": "wrk", "failures": [],
             "finished": False, "accuracy": []}
    (tmp_path / "gpu-check.json").write_text(json.dumps(saved))
    assert main(["--report-from", str(tmp_path / "gpu-check.json")]) == 1
    table = (tmp_path / "gpu-check.md").read_text()
    assert "**Stopped before the end**" in table
    assert "| every model served on the provider asked, none degraded | not reached | no |" in table


def test_an_earlier_runs_results_still_make_their_report(tmp_path):
    """A run committed while the servers had a setting they no longer have (its rows carry it, with counts the check
    no longer reads): the table and plot are written again from its JSON, what it no longer knows left out."""
    earlier = REPO_ROOT / "loadtests/results/2026-11-28-gpu/1-shared-batches-and-graphs/gpu-check.json"
    shutil.copy(earlier, tmp_path / "gpu-check.json")
    assert main(["--report-from", str(tmp_path / "gpu-check.json")]) == 0
    table = (tmp_path / "gpu-check.md").read_text()
    assert "| default | powers_of_two | on (4/4) | 1 | 1 | 745 | 745 |" in table  # ResNet-18, graphs, one client
    assert "| default | powers_of_two | on (4/4) | 1 | 256 | 10051 |" not in table  # the same with shared batches
    assert "18 rows of servers with a setting since removed (shared_batches other than off) are left out" in table
    assert "handed" not in table and "shared batches on" not in table
    assert (tmp_path / "gpu-check.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (make setup-test installs it)")
def test_the_served_load_comes_from_wrk_where_it_is_installed(tmp_path):
    result = gpu_check(tmp_path, "--providers", "CPUExecutionProvider", "--no-accuracy", "--cuda-graphs", "off", "on")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    served = report["throughput"]["lenet5-digits"]["served"]
    assert report["client"] == "wrk" and all(r["client"] == "wrk" for r in served)
    # a server each with cuda_graphs off and on; on the CPU neither uses graphs, nor does the in-process run
    # (the server's two workers each logged the model ready, and none replays graphs)
    none_of_two = {"graphed": 0, "loaded": 2}
    assert [(r["cuda_graphs"], r["graphs_in_use"]) for r in served] == [("off", none_of_two)] * 2 + [("on", none_of_two)] * 2
    assert not any(r["cuda_graphs"] for r in report["throughput"]["lenet5-digits"]["in_process"])
    assert all(r["throughput_rps"] > 0 and r["errors"] == 0 and r["client_cpu_ms_per_request"] > 0 for r in served)
    assert "| wrk (" in (tmp_path / "gpu-check.md").read_text()


@pytest.mark.skipif(cuda_device_count() > 0, reason="this host has a GPU")
def test_a_gpu_provider_this_onnx_runtime_lacks_fails_the_check_at_once(tmp_path):
    result = gpu_check(tmp_path, "--providers", "CUDAExecutionProvider")
    assert result.returncode == 1
    assert "CUDAExecutionProvider is not in this ONNX Runtime" in result.stderr
    assert not (tmp_path / "gpu-check.json").exists()


@ON_A_GPU
def test_on_a_gpu_every_model_runs_on_cuda_as_accurately_as_its_card(tmp_path):
    result = gpu_check(tmp_path, "--providers", "CUDAExecutionProvider", "--variants", "fp32", "fp16",
                       "--cuda-graphs", "off", "on")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["served_models"]["lenet5-digits"]["provider"] == "CUDAExecutionProvider"
    served = report["throughput"]["lenet5-digits"]["served"]
    for row in served:  # captured by every worker where asked, by none elsewhere
        graphed, loaded = row["graphs_in_use"]["graphed"], row["graphs_in_use"]["loaded"]
        assert loaded > 0 and graphed == (loaded if row["cuda_graphs"] == "on" else 0)
    assert any(r["cuda_graphs"] for r in report["throughput"]["lenet5-digits"]["in_process"])
    assert all(r["passed"] for r in report["answers"]) and {r["cuda_graphs"] for r in report["answers"]} == {"off", "on"}
    assert all(r["others_cores"] > 0 for r in served)  # on a GPU no batch runs on the event loop
