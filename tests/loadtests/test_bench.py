"""The benchmark harness, shortened: it measures the raw limit, a real server over
/predict (wrk) and V2 REST (perf_analyzer), the FastAPI baseline on the same
model, profiles a real server with py-spy, and writes the table, the figures and the plots."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

import loadtests.bench.__main__ as bench_main
from cnnserve.serving.repository import discover
from loadtests.bench import raw
from loadtests.bench.grpc_channel import ONE_CHANNEL
from loadtests.bench.profile import layer_of, read_collapsed
from loadtests.bench.raw import RawPoint
from loadtests.bench.report import how_targets_are_measured, target_rows
from loadtests.bench.served import measure
from loadtests.local_server import REPO_ROOT


def test_a_short_benchmark_writes_its_table_figures_and_plot(tmp_path):
    command = [sys.executable, "-m", "loadtests.bench", "--models", "lenet5-digits", "--bench-models",
               "--protocols", "predict", "v2-http", "--concurrency", "1", "4", "--seconds", "1", "--rounds", "0",
               "--profile-seconds", "1", "--out", str(tmp_path)]
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    figures = json.loads((folder / "bench.json").read_text())
    assert figures["raw"]["lenet5-digits"]["best"]["images_per_s"] > 0
    served = {(r["protocol"], r["batching"], r["concurrency"]): r for r in figures["served"]}
    assert set(served) == {(p, b, c) for p in ("predict", "v2-http") for b in ("on", "off") for c in (1, 4)}
    assert all(r["throughput_rps"] > 0 and r["errors"] == 0 for r in served.values())
    assert all(r["mean_batch"] == 1 for (_, batching, _), r in served.items() if batching == "off")
    assert [r["concurrency"] for r in figures["baseline"]] == [1, 4]
    table = (folder / "bench.md").read_text()
    assert "FastAPI baseline" in table and "V2 REST binary" in table and "/predict (PNG)" in table
    assert (folder / "bench.png").read_bytes().startswith(b"\x89PNG")
    zoom = {(r["zoom_in_below"], r["images"], r["concurrency"]): r for r in figures["zoom"]}
    assert set(zoom) == {(z, i, c) for z in (0.5, 0.0) for i in ("small-digit photos", "large-digit PNGs")
                         for c in (1, 8)}
    assert all(r["throughput_rps"] > 0 and r["errors"] == 0 for r in zoom.values())
    assert "What the zoom-in pass costs" in table
    (explained,) = figures["explain"]
    assert explained["model"] == "lenet5-digits" and explained["occluded_images"] == 64 and explained["p50_ms"] > 0
    assert "What an explanation costs" in table
    assert figures["profiles"] == ["profile-lenet5-digits-c64"]  # ResNet-18's is skipped: not measured
    assert "[![profile-lenet5-digits-c64](profile-lenet5-digits-c64.png)](profile-lenet5-digits-c64.md)" in table


def round_figures(**changes) -> dict:
    figures = {
        "resnet18_predict_raw": 500.0, "resnet18_v2-http_raw": 500.0, "resnet18_grpc_raw": 500.0,
        "resnet18_predict_c64": 380.0, "resnet18_v2-http_c64": 420.0,
        "resnet18_grpc_c64": 390.0, "resnet18_predict_c64_mean_batch": 20.0, "resnet18_v2-http_c64_mean_batch": 24.0,
        "resnet18_grpc_c64_mean_batch": 18.0, "resnet18_predict_ratio": 0.76, "resnet18_v2-http_ratio": 0.84,
        "resnet18_grpc_ratio": 0.78, "lenet5_vs_fastapi": 4000 / 3000, "lenet5_vs_noop_v2": 6000 / 9000,
        "lenet5_vs_noop": 6000 / 18000, "lenet5_v2-http_c64": 4000.0, "lenet5_fastapi_c64": 3000.0,
        "lenet5_wrk_infer_c64": 6000.0, "noop_v2_wrk_c64": 9000.0, "noop_wrk_c64": 18000.0,
        "lenet5-digits_raw_b1_ms": 0.05, "lenet5-digits_decode_then_run_ms": 0.2, "lenet5-digits_predict_c1_p50_ms": 1.0,
        "lenet5-digits_c1_added_ms": 0.8,
    }
    return {**figures, **changes}


def test_targets_are_judged_on_the_medians_of_the_rounds():
    results = {
        "raw": {"lenet5-digits": {"decode_ms": 0.1}, "resnet18-digits": {"decode_ms": 0.2, "best": {"threads": 2, "batch": 32}}},
        "serving": {"workers": 2, "threads": 1, "cores": 2},
        "targets": {"worker_processes": 2, "rounds": [
            round_figures(), round_figures(**{"resnet18_v2-http_ratio": 0.60}), round_figures(**{"lenet5_vs_noop_v2": 6 / 13}),
        ]},
    }
    rows = target_rows(results)
    assert [(row.target.split(",")[0], row.met) for row in rows] == [
        ("resnet18-digits", True),  # median of 0.84, 0.60, 0.84 over V2 REST
        ("lenet5-digits", True),  # 4000 / 3000
        ("lenet5-digits", True),  # the V2 no-op: median of 6000 / 9000, 6000 / 9000, 6000 / 13000
        ("resnet18-digits", True),  # mean batch on every protocol: the lowest is gRPC's 18
        ("lenet5-digits", True),  # /predict added 0.8 ms to decoding then running in process
        ("workers × ONNX Runtime threads ≤ cores (defaults)", True),
    ]
    assert "V2 no-op" in rows[2].target and "bare no-op POST 0.33" in rows[2].measured
    assert rows[3].measured == "18.0 images, V2 gRPC (/predict (PNG) 20.0, V2 REST binary 24.0, V2 gRPC 18.0)"
    unbatched = {**results, "targets": {**results["targets"], "rounds": [
        round_figures(**{"resnet18_grpc_c64_mean_batch": 7.0})]}}
    assert not target_rows(unbatched)[3].met  # one protocol whose requests do not batch fails the row
    assert rows[0].rounds == "0.60–0.84"  # how firm each median is: its lowest and highest round
    told = how_targets_are_measured({**results["targets"], "passes": {"ratios": 3, "one_client": 6}})[0]
    assert told.startswith("Each row is the median of 3 rounds") and "in turn, 3 times over (6 for" in told
    slower = {**results, "targets": {**results["targets"], "rounds": [round_figures(**{"lenet5_vs_noop_v2": 6 / 13})]}}
    assert not target_rows(slower)[2].met  # 6000 / 13000 < 0.5
    assert rows[4].measured == "0.80 ms (paired; /predict 1.00, in process 0.20, or 0.15 measured apart)"
    one_client = {**results, "targets": {**results["targets"], "rounds": [
        round_figures(**{"lenet5-digits_c1_added_ms": 2.1})]}}
    assert not target_rows(one_client)[4].met  # added 2.1 ms > 2


def test_calls_on_one_grpc_channel_are_judged_on_their_own_row_when_measured():
    results = {
        "raw": {"resnet18-digits": {"decode_ms": 0.2, "best": {"threads": 2, "batch": 32}}},
        "serving": {"workers": 2, "threads": 1, "cores": 2},
        "targets": {"worker_processes": 2, "rounds": [round_figures()]},
    }
    assert not any("one gRPC channel" in row.target for row in target_rows(results))  # older runs lack it
    one_channel = {"resnet18_grpc-one-channel_ratio": 0.45, "resnet18_grpc-one-channel_c64": 225.0,
                   "resnet18_grpc-one-channel_c64_mean_batch": 31.0}
    results["targets"]["rounds"] = [round_figures(**one_channel)]
    (row,) = [row for row in target_rows(results) if "one gRPC channel" in row.target]
    assert row.measured == "0.45 (225 calls/s; mean batch 31.0)" and not row.met
    results["targets"]["rounds"] = [round_figures(**{**one_channel, "resnet18_grpc-one-channel_ratio": 0.85})]
    (row,) = [row for row in target_rows(results) if "one gRPC channel" in row.target]
    assert row.met


def test_one_grpc_channel_carries_many_calls_in_flight_and_they_batch(server):
    row = measure(server, "resnet18-digits", [1, 3, 64, 64], ONE_CHANNEL, 64, 1.0)  # as the bench row sends them
    assert row["throughput_rps"] > 0 and row["errors"] == 0
    assert row["mean_batch"] >= 4


def test_resnet18_is_judged_on_each_rounds_paired_ratios_not_on_a_ratio_of_medians():
    results = {
        "raw": {"resnet18-digits": {"decode_ms": 0.2, "best": {"threads": 2, "batch": 32}}},
        "serving": {"workers": 2, "threads": 1, "cores": 2},
        "targets": {"worker_processes": 2, "rounds": [round_figures(**{"resnet18_v2-http_ratio": 0.70})]},
    }
    row = target_rows(results)[0]
    assert row.measured == ("0.78 (/predict (PNG) 0.76, V2 REST binary 0.70, V2 gRPC 0.78; "
                            "raw FP32: batch 32, 2 thr, 500 images/s)")
    assert not row.met


def test_a_slow_spell_on_one_side_of_a_pair_is_outvoted_by_the_other_pairs(monkeypatch):
    raws = iter([600.0, 500.0, 640.0])  # the second raw turn caught a slow spell
    served = iter([560.0, 300.0, 560.0])  # and so did the second served turn, harder
    monkeypatch.setattr(bench_main.raw, "measure_point",
                        lambda model, threads, batch, seconds, variant, runs=1: RawPoint(threads, batch, next(raws), 100.0))
    monkeypatch.setattr(bench_main, "measure", lambda *args: {"throughput_rps": next(served), "mean_batch": 30.0})
    resnet = SimpleNamespace(name="resnet18-digits", input_shape=(3, 64, 64))
    found = bench_main.resnet_against_raw(None, resnet, {"threads": 2, "batch": 64, "variant": "int8"}, "v2-http", 2.0)
    assert found["resnet18_v2-http_ratio"] == pytest.approx(560 / 640)  # pairs 0.93, 0.60, 0.875
    assert found["resnet18_v2-http_raw"] == 600 and found["resnet18_v2-http_c64"] == 560


def test_the_in_process_harness_prices_each_route_without_sockets():
    """Every route answers 200 through the real core; the bare no-op costs less than the V2 no-op, which costs
    less than inference."""
    command = [sys.executable, "-m", "loadtests.bench.inproc", "--clients", "4", "--seconds", "0.2", "--rounds", "1",
               "--profile", "v2-binary"]
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    costs = {line.split()[0]: float(line.split()[1]) for line in result.stdout.splitlines() if "µs of CPU" in line}
    assert set(costs) == {"v2-binary", "predict", "noop-v2", "noop"}
    assert 0 < costs["noop"] < costs["noop-v2"] < costs["v2-binary"] and costs["noop"] < costs["predict"]
    assert "function calls" in result.stdout  # the profile of one route


def test_the_raw_best_includes_a_single_threaded_call_on_every_core_at_once():
    """A server with a worker per core computes that way under load; a raw best without it would flatter the
    ratios. The batch-1 latency stays that of one call alone."""
    lenet = next(v for v in discover(REPO_ROOT / "models").versions() if v.name == "lenet5-digits")
    points = raw.measure_raw(lenet, cores=2, seconds=0.01)
    assert {(p.threads, p.runs) for p in points} == {(1, 1), (2, 1), (1, 2)}
    assert all(p.images_per_s > 0 for p in points)
    assert raw.batch1(points).runs == 1
    assert raw.describe_threads(RawPoint(1, 16, 700.0, 20.0, runs=2)) == "2 runs × 1 thr"
    assert raw.describe_threads({"threads": 2, "batch": 16}) == "2 thr"  # results written before runs existed


def test_a_profile_sample_belongs_to_its_innermost_known_layer():
    outer = ["Runner.run (asyncio/runners.py:118)", "FastLane.handle (cnnserve/serving/fastlane.py:92)",
             "infer (cnnserve/serving/v2/rest.py:147)"]
    assert layer_of([*outer, "loads (json/__init__.py:346)", "JSONDecoder.decode (json/decoder.py:337)"]) == "JSON"
    assert layer_of([*outer, "Gauge.inc (prometheus_client/metrics.py:440)"]) == "metrics (prometheus-client)"
    assert layer_of(outer) == "cnnserve"
    assert layer_of(["Thread._bootstrap (threading.py:1002)", "Condition.wait (threading.py:327)"]) is None
    assert layer_of(["Thread._bootstrap (threading.py:1002)", "_worker (concurrent/futures/thread.py:81)"]) is None


def test_a_thread_sampled_without_python_frames_counts_as_native_not_as_a_python_thread(tmp_path):
    """py-spy sometimes lists a thread with an empty stack (CI run of 2026-11-26 failed on one)."""
    collapsed = tmp_path / "worker0.collapsed"
    collapsed.write_text("thread (1201) 3\n"
                         "thread (1202);Runner.run (asyncio/runners.py:118);handle (cnnserve/serving/routes.py:9) 5\n")
    layers, functions, python_threads = read_collapsed([collapsed])
    assert layers == {"cnnserve": 5} and python_threads == {1202}
    assert functions == {"handle (cnnserve/serving/routes.py)": 5}


def test_a_profile_of_a_real_server_prices_each_layer_of_a_request(tmp_path):
    """py-spy on the workers of a real server under wrk: only inference pays for ONNX Runtime."""
    command = [sys.executable, "-m", "loadtests.bench.profile", "--routes", "v2-binary", "noop-v2", "--clients", "4",
               "--seconds", "1", "--out", str(tmp_path)]
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    routes = json.loads((folder / "profile-lenet5-digits-c4.json").read_text())["routes"]
    assert routes["v2-binary"]["layers_us"]["ONNX Runtime"] > 0
    assert routes["noop-v2"]["layers_us"].get("ONNX Runtime", 0) == 0
    for figures in routes.values():
        assert figures["samples"] > 0
        assert abs(sum(figures["layers_us"].values()) - figures["cpu_us"]) < 0.01 * figures["cpu_us"]
    assert "| server CPU per request |" in (folder / "profile-lenet5-digits-c4.md").read_text()
    assert (folder / "profile-lenet5-digits-c4.png").read_bytes().startswith(b"\x89PNG")
    assert list(folder.glob("profile-lenet5-digits-c4-v2-binary-worker*.collapsed"))


def test_served_is_divided_by_the_raw_figure_of_the_variant_served_and_auto_is_judged_against_fp32():
    raw_fp32, raw_int8 = {"threads": 2, "batch": 32}, {"threads": 2, "batch": 64}
    results = {
        "raw": {"resnet18-digits": {"decode_ms": 0.2, "best": raw_fp32,
                                    "variants": {"int8": {"best": raw_int8}}}},
        "serving": {"workers": 2, "threads": 1, "cores": 2},
        "targets": {"worker_processes": 2, "precision": {"resnet18-digits": "int8"}, "rounds": [
            round_figures(resnet18_auto_c64=900.0, resnet18_fp32_c64=500.0, resnet18_auto_vs_fp32=1.8)]},
    }
    rows = target_rows(results)
    assert "served (INT8) ÷ raw" in rows[0].target and "raw INT8: batch 64" in rows[0].measured
    (auto,) = [row for row in rows if "precision auto" in row.target]
    assert auto.measured.startswith("1.80 (900 vs 500 req/s)") and auto.met
    results["targets"]["rounds"] = [round_figures(resnet18_auto_c64=700.0, resnet18_fp32_c64=500.0,
                                                  resnet18_auto_vs_fp32=1.4)]
    assert not [row for row in target_rows(results) if "precision auto" in row.target][0].met  # 1.4 < 1.6


def test_the_report_names_the_device_the_models_ran_on():
    from loadtests.bench.report import device

    gpu = {"provider": "CUDAExecutionProvider", "gpu": "NVIDIA H200", "driver": "580.159.04"}
    assert device(gpu) == "NVIDIA H200 (driver 580.159.04) via CUDAExecutionProvider"
    assert device({"provider": "CPUExecutionProvider"}) == "models on CPUExecutionProvider"
    assert device({"gpu": False}) == "models on CPUExecutionProvider"  # results from before providers were recorded
