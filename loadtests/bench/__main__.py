"""``python -m loadtests.bench``: how fast is cnnserve on this machine, and where does the time go?

In one run, on one machine:

1. the limit: raw in-process ONNX Runtime per committed model (batch 1 and the best batch), for each
   precision variant present (FP32, and INT8 where derived); a served figure is divided by the raw figure
   of the variant the server chose (``precision: auto``, shown in ``/models``);
2. the sweep: each model over ``/predict`` (PNG files, wrk), V2 REST binary and gRPC
   (perf_analyzer) at each concurrency, batching on and off, with the mean batch the
   server formed, next to the hand-written FastAPI + ONNX Runtime baseline;
3. the targets: the ratios the project promises, measured head to head in
   interleaved rounds (both servers up, one loaded at a time) and reported as medians;
4. what the zoom-in pass costs: ``/predict`` with small-digit photos (each one gets
   a second look) and with the sweep's large-digit PNGs, on servers with the pass on and off;
5. where the time goes: py-spy profiles of a real server (``profile.py``), LeNet-5's
   V2 REST and the two no-op routes at 64 clients, and ResNet-18's ``/predict`` at one client.

It writes ``bench.md``, ``bench.json`` and ``bench.png`` (and the profiles) under
``loadtests/results/<date>/``. ``make bench`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from cnnserve.machine import available_cores
from cnnserve.serving.config import load_settings
from cnnserve.serving.precision import CANDIDATES
from cnnserve.serving.repository import discover
from cnnserve.training.variants import missing_variants

from ..local_server import running_server
from . import raw
from .grpc_channel import ONE_CHANNEL
from .machine import describe_machine
from .noop_routes import NOOP_SERVICE
from .profile import profile_model, require_py_spy
from .report import median, write_report
from .served import PROTOCOLS, baseline_measure, measure, predict_load, route_loads, running_baseline, small_digit_load
from .wrk import wrk

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_MODELS = ("resnet18-digits", "lenet5-digits")
ONE_CLIENT_PAIRS = 6
RATIO_PASSES = 3
ZOOM_CLIENTS = (1, 8)
PROFILES = (("lenet5-digits", ["v2-binary", "noop-v2", "noop"], 64), ("resnet18-digits", ["predict"], 1))  # model, routes, clients


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sweep(args, versions, workers: int, threads: int, tmp: Path) -> tuple[list[dict], list[dict]]:
    served, baseline = [], []
    for batching in ("on", "off"):
        settings = {"target": NOOP_SERVICE, "batching": "true" if batching == "on" else "false",
                    "serve": ",".join(v.name for v in versions), "providers": args.providers}
        with running_server(tmp, models_dir=str(args.models_dir.resolve()), **settings) as server:
            precision = served_precision(server)
            for version in versions:
                shape = [1, *version.input_shape]
                for protocol in args.protocols:
                    for concurrency in args.concurrency:
                        row = measure(server, version.name, shape, protocol, concurrency, args.seconds)
                        served.append({"model": version.name, "protocol": protocol, "batching": batching,
                                       "precision": precision[version.name], "concurrency": concurrency, **row})
                        log(f"{version.name:<16} {protocol:<8} batching {batching:<3} c={concurrency:<3} "
                            f"{row['throughput_rps']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:8.2f} ms"
                            f"  mean batch {row['mean_batch'] or 0:5.1f}  errors {row['errors']}")
    if args.baseline:
        for version in versions:
            with running_baseline(version.file_for("fp32")[0], workers, threads, tmp) as url:
                for concurrency in args.concurrency:
                    row = baseline_measure(url, version.name, concurrency, args.seconds)
                    baseline.append({"model": version.name, "concurrency": concurrency, **row})
                    log(f"{version.name:<16} FastAPI  c={concurrency:<3} {row['throughput_rps']:8.1f} req/s  "
                        f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:8.2f} ms")
    return served, baseline


def target_round(server, fp32_server, fastapi_url: str, versions: dict, raw_best: dict, precision: dict[str, str],
                 cores: int, seconds: float) -> dict:
    """One round of the head-to-head measurements behind the targets.

    Every ratio is taken within a pass of alternated turns and the median of the passes kept: the machine's
    speed swings by a third within minutes (raw ResNet-18 read 435-647 images/s across one run's rounds,
    LeNet-5 over V2 REST 6,600-8,800 req/s in eight back-to-back measurements) and has slow spells of a
    second or two, and one turn of each side could catch a spell on one side only.
    """
    resnet, lenet = versions["resnet18-digits"], versions["lenet5-digits"]
    found = {}
    for protocol in (*PROTOCOLS, ONE_CHANNEL):
        found.update(resnet_against_raw(server, resnet, raw_best, protocol, seconds))
    passes = in_turns([
        lambda: {"resnet18_auto_c64": measure(server, resnet.name, [1, *resnet.input_shape], "v2-http", 64,
                                              seconds)["throughput_rps"]},
        lambda: {"resnet18_fp32_c64": measure(fp32_server, resnet.name, [1, *resnet.input_shape], "v2-http", 64,
                                              seconds)["throughput_rps"]},
    ], RATIO_PASSES)
    found.update(medians(passes))
    found["resnet18_auto_vs_fp32"] = median_ratio(passes, "resnet18_auto_c64", "resnet18_fp32_c64")
    passes = in_turns([
        lambda: {"lenet5_v2-http_c64": measure(server, lenet.name, [1, *lenet.input_shape], "v2-http", 64,
                                               seconds / 2)["throughput_rps"]},
        lambda: {"lenet5_fastapi_c64": baseline_measure(fastapi_url, lenet.name, 64, seconds / 2)["throughput_rps"]},
    ], RATIO_PASSES)
    found.update(medians(passes))
    found["lenet5_vs_fastapi"] = median_ratio(passes, "lenet5_v2-http_c64", "lenet5_fastapi_c64")
    loads = route_loads(lenet)
    passes = in_turns([
        lambda: {"lenet5_wrk_infer_c64": wrk(server.url, loads["v2-binary"], 64, seconds / 2)["throughput_rps"]},
        lambda: {"noop_v2_wrk_c64": wrk(server.url, loads["noop-v2"], 64, seconds / 2)["throughput_rps"]},
        lambda: {"noop_wrk_c64": wrk(server.url, loads["noop"], 64, seconds / 2)["throughput_rps"]},
    ], RATIO_PASSES)
    found.update(medians(passes))
    found["lenet5_vs_noop_v2"] = median_ratio(passes, "lenet5_wrk_infer_c64", "noop_v2_wrk_c64")
    found["lenet5_vs_noop"] = median_ratio(passes, "lenet5_wrk_infer_c64", "noop_wrk_c64")
    for version in versions.values():
        variant = precision[version.name]
        ones = [raw.measure_point(version, threads, 1, seconds / 4, variant) for threads in sorted({1, cores})]
        found[f"{version.name}_raw_b1_ms"] = raw.batch1(ones).p50_ms
        found.update(one_client(server, version, variant, cores, seconds))
    return found


def in_turns(measurements: list[Callable[[], dict]], passes: int) -> list[dict]:
    """Each measurement (a callable returning named figures) in turn, ``passes`` times over: one dict of
    figures per pass, so that a ratio is taken between figures measured seconds apart."""
    return [{name: value for measured in measurements for name, value in measured().items()} for _ in range(passes)]


def medians(passes: list[dict]) -> dict:
    return {name: median(passes, name) for name in passes[0]}


def median_ratio(passes: list[dict], numerator: str, denominator: str) -> float:
    return statistics.median(p[numerator] / p[denominator] for p in passes)


def resnet_against_raw(server, resnet, raw_best: dict, protocol: str, seconds: float) -> dict:
    """ResNet-18 served at 64 clients over ``protocol``, and raw ONNX Runtime at the raw sweep's best
    thread count and batch size of the variant the server serves (``raw_best``), in turns; the ratio is the
    median of the passes'."""
    raw_key, served_key = f"resnet18_{protocol}_raw", f"resnet18_{protocol}_c64"

    def served() -> dict:
        row = measure(server, resnet.name, [1, *resnet.input_shape], protocol, 64, seconds)
        return {served_key: row["throughput_rps"], f"{served_key}_mean_batch": row["mean_batch"]}

    passes = in_turns([
        lambda: {raw_key: raw.measure_point(resnet, raw_best["threads"], raw_best["batch"], seconds / 2,
                                            raw_best["variant"], runs=raw_best.get("runs", 1)).images_per_s},
        served,
    ], RATIO_PASSES)
    return {**medians(passes), f"resnet18_{protocol}_ratio": median_ratio(passes, served_key, raw_key)}


def one_client(server, version, variant: str, cores: int, seconds: float) -> dict:
    """The one-client target: in-process decode-then-run (of ``variant``, the one served) and served ``/predict``,
    measured in turn
    ``ONE_CLIENT_PAIRS`` times in short turns, and what the server adds judged pair by pair. The machine
    has slow spells of a second or two (VGG-11's batch 1 went 8 -> 12 ms, in process as much as served), so
    both sides of a pair mostly share one, and the median of the pairs outvotes those that do not."""
    in_turn, served = f"{version.name}_decode_then_run_ms", f"{version.name}_predict_c1_p50_ms"
    passes = in_turns([
        lambda: {in_turn: raw.decode_then_run(version, cores, seconds / 8, variant=variant).p50_ms},
        lambda: {served: measure(server, version.name, [1, *version.input_shape], "predict", 1, seconds / 4)["p50_ms"]},
    ], ONE_CLIENT_PAIRS)
    return {**medians(passes), f"{version.name}_c1_added_ms": statistics.median(p[served] - p[in_turn] for p in passes)}


def targets(args, versions, raw_results: dict, workers: int, threads: int, cores: int, tmp: Path) -> dict:
    if args.providers != raw.CPU:
        return {"skipped": "the targets are the CPU's (against the FastAPI baseline and the no-op routes); "
                           "on a GPU, make gpu-check measures its own"}
    by_name = {v.name: v for v in versions}
    missing = [m for m in TARGET_MODELS if m not in by_name]
    if missing:
        return {"skipped": f"the targets need {missing}"}
    rounds = []
    with running_server(tmp, models_dir=str(args.models_dir.resolve()), target=NOOP_SERVICE) as server, \
            running_server(tmp, models_dir=str(args.models_dir.resolve()), serve="resnet18-digits",
                           precision="fp32") as fp32_server, \
            running_baseline(by_name["lenet5-digits"].file_for("fp32")[0], workers, threads, tmp) as fastapi_url:
        worker_processes = len(psutil.Process(server.process.pid).children())
        precision = served_precision(server)
        resnet_raw = raw_results["resnet18-digits"]
        raw_best = {**resnet_raw.get("variants", {}).get(precision["resnet18-digits"], resnet_raw)["best"],
                    "variant": precision["resnet18-digits"]}
        for index in range(args.rounds):
            rounds.append(target_round(server, fp32_server, fastapi_url, by_name, raw_best, precision, cores,
                                       args.seconds))
            log(f"target round {index + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.4g}" for k, v in rounds[-1].items()
                                                                        if v is not None))
    return {"rounds": rounds, "worker_processes": worker_processes, "precision": precision,
            "passes": {"ratios": RATIO_PASSES, "one_client": ONE_CLIENT_PAIRS}}


def served_precision(server) -> dict[str, str]:
    """The precision variant the server chose for each model's latest version (``GET /models``)."""
    return {m["name"]: m["versions"][-1]["precision"] for m in server.client.get("/models").json()["models"]}


def raw_figures(version, cores: int, seconds: float, provider: str = raw.CPU) -> dict:
    """Raw ONNX Runtime for a model on ``provider``: FP32's points, best and batch-1 figures (and decode costs) at
    the top, and the best and batch-1 figures of every other variant that provider may serve under ``variants``
    (INT8 on the CPU, FP16 on a GPU)."""
    points = raw.measure_raw(version, cores, seconds=seconds / 2, provider=provider)
    figures = {
        "points": [vars(p) for p in points],
        "best": vars(raw.best(points)),
        "batch1": vars(raw.batch1(points)),
        "decode_ms": raw.decode_ms(version),
        "decode_then_run": vars(raw.decode_then_run(version, cores, seconds=seconds / 2, provider=provider)),
        "input_shape": list(version.input_shape),
        "variants": {},
    }
    servable = [v for v in CANDIDATES if v != "fp32"] if provider == raw.CPU else ["fp16"]
    for variant in (v for v in servable if v in version.variants()):
        points = raw.measure_raw(version, cores, seconds=seconds / 2, variant=variant, provider=provider)
        figures["variants"][variant] = {"best": vars(raw.best(points)), "batch1": vars(raw.batch1(points))}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--bench-models-dir", type=Path, default=REPO_ROOT / "models-bench",
                        help="benchmark-only exports (make bench-models); measured raw and over gRPC when present")
    parser.add_argument("--models", nargs="+", help="default: every committed model")
    parser.add_argument("--bench-models", nargs="*", default=["resnet50-imagenet-untrained"],
                        help="which benchmark-only models to run (VGG-16 at 224 is too slow for 2 cores)")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement window")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds for the targets, reported as medians: the machine drifts (0: skip)")
    parser.add_argument("--profile-seconds", type=float, default=8.0,
                        help="per py-spy window of the profiles (0: skip them)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the FastAPI baseline")
    parser.add_argument("--no-zoom", dest="zoom", action="store_false", help="skip the zoom-in pass's cost")
    parser.add_argument("--no-explain", dest="explain", action="store_false", help="skip POST /explain's cost")
    parser.add_argument("--providers", default=raw.CPU,
                        help="what raw ONNX Runtime and the servers run on, e.g. CUDAExecutionProvider (with onnxruntime-gpu: "
                             "the .venv-gpu that make gpu-check makes); the CPU targets are skipped on a GPU")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "loadtests" / "results")
    args = parser.parse_args()

    settings = load_settings({}, Path(os.devnull))
    cores = available_cores()
    workers, threads = settings.inference_workers(cores), settings.session_threads(cores)
    versions = [v for v in discover(args.models_dir).versions() if not args.models or v.name in args.models]
    bench_versions = [
        v for v in (discover(args.bench_models_dir).versions() if args.bench_models_dir.exists() else [])
        if v.name in args.bench_models
    ]
    started = datetime.datetime.now(datetime.UTC)
    results = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m loadtests.bench " + shlex.join(sys.argv[1:]),
        "machine": describe_machine(args.providers),
        "serving": {"workers": workers, "threads": threads, "cores": cores},
        "raw": {},
    }
    log(f"machine: {results['machine']['cpu']}, {cores} cores; cnnserve defaults: {workers} workers × {threads} threads")
    for version in versions:
        if missing := missing_variants(version.folder):
            log(f"WARNING: {version.key} lacks its {', '.join(missing)} file(s), so precision auto can only serve what "
                f"is there: python -m cnnserve.training.variants --missing {version.folder} (make bench does)")
    for version in [*versions, *bench_versions]:
        log(f"raw ONNX Runtime: {version.name}")
        results["raw"][version.name] = raw_figures(version, cores, args.seconds, args.providers)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results["served"], results["baseline"] = sweep(args, versions, workers, threads, tmp)
        if bench_versions:
            results["served"] += bench_sweep(args, bench_versions, tmp)
        if args.rounds:
            results["targets"] = targets(args, versions, results["raw"], workers, threads, cores, tmp)
        if args.zoom:
            results["zoom"] = zoom_cost(args, versions, tmp)
        if args.explain:
            results["explain"] = explain_cost(args, versions, tmp)
    folder = args.out / started.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    if args.profile_seconds:
        results["profiles"] = profiles(args, {v.name for v in versions}, folder)
    results["minutes"] = round((datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60, 1)
    (folder / "bench.json").write_text(json.dumps(results, indent=1))
    summary = write_report(results, folder)
    print(summary)
    log(f"wrote {folder}/bench.md, bench.json, bench.png")


def zoom_cost(args, versions, tmp: Path) -> list[dict]:
    """``/predict`` throughput and latency with the zoom-in pass on (the default) and off, for photos of small
    digits (every one zoomed) and the sweep's large-digit PNGs (none zoomed): what the second look costs."""
    rows = []
    for zoom in ("0.5", "0"):
        with running_server(tmp, models_dir=str(args.models_dir.resolve()), zoom_in_below=zoom,
                            providers=args.providers) as server:
            for version in versions:
                channels, size = version.input_shape[0], version.input_shape[-1]
                for images, load in (("small-digit photos", small_digit_load(version.name)),
                                     ("large-digit PNGs", predict_load(version.name, channels, size))):
                    for clients in ZOOM_CLIENTS:
                        row = wrk(server.url, load, clients, args.seconds * 2)
                        rows.append({"model": version.name, "zoom_in_below": float(zoom), "images": images,
                                     "concurrency": clients, **row})
                        log(f"{version.name:<16} zoom_in_below {zoom:<3} {images:<18} c={clients:<2} "
                            f"{row['throughput_rps']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  errors {row['errors']}")
    return rows


EXPLAIN_CALLS = 12


def explain_cost(args, versions, tmp: Path) -> list[dict]:
    """``POST /explain`` at its default window and stride, one call after another per model: p50 and p90 of a
    whole explanation (the answer and its 64 occluded copies), on a server of its own."""
    rows = []
    with running_server(tmp, models_dir=str(args.models_dir.resolve()), providers=args.providers) as server:
        for version in versions:
            load = predict_load(version.name, version.input_shape[0], version.input_shape[-1])
            durations = []
            for index in range(EXPLAIN_CALLS + 1):  # the first warms the occluded batch sizes
                began = time.perf_counter()
                response = server.client.post(f"/explain?model={version.name}",
                                              content=load.bodies[index % len(load.bodies)],
                                              headers={"content-type": load.content_type})
                if response.status_code != 200:
                    raise RuntimeError(f"/explain answered {response.status_code}: {response.text[:300]}")
                durations.append(time.perf_counter() - began)
            rows.append({"model": version.name, "calls": EXPLAIN_CALLS,
                         "p50_ms": statistics.median(durations[1:]) * 1000,
                         "p90_ms": statistics.quantiles(durations[1:], n=10)[-1] * 1000,
                         "occluded_images": response.json()["timings"]["occluded_images"]})
            log(f"{version.name:<16} /explain p50 {rows[-1]['p50_ms']:7.1f} ms, p90 {rows[-1]['p90_ms']:7.1f} ms")
    return rows


def profiles(args, served: set[str], folder: Path) -> list[str]:
    """The profiles of ``PROFILES`` whose model was measured; the stems of their files in ``folder``."""
    try:
        require_py_spy()
    except FileNotFoundError as exc:
        log(f"profiles skipped: {exc}")
        return []
    stems = []
    for model, routes, clients in PROFILES:
        if model in served:
            log(f"profiling {model} ({', '.join(routes)}) at {clients} client(s) with py-spy")
            command = shlex.join(["python", "-m", "loadtests.bench.profile", "--model", model, "--routes", *routes,
                                  "--clients", str(clients), "--seconds", str(args.profile_seconds)])
            stems.append(profile_model(args.models_dir, model, routes, clients, args.profile_seconds, folder,
                                       command).name)
    return stems


def bench_sweep(args, versions, tmp: Path) -> list[dict]:
    """The benchmark-only ImageNet-shaped models: gRPC only, at most 32 clients (they are slow here)."""
    rows = []
    with running_server(tmp, models_dir=str(args.bench_models_dir.resolve()), max_queue_images="4096",
                        providers=args.providers) as server:
        for version in versions:
            for concurrency in [c for c in args.concurrency if c <= 32]:
                row = measure(server, version.name, [1, *version.input_shape], "grpc", concurrency, args.seconds * 2)
                rows.append({"model": version.name, "protocol": "grpc", "batching": "on",
                             "concurrency": concurrency, **row})
                log(f"{version.name:<16} grpc     c={concurrency:<3} {row['throughput_rps']:8.1f} req/s  "
                    f"p50 {row['p50_ms']:7.2f} ms  mean batch {row['mean_batch'] or 0:5.1f}")
    return rows


if __name__ == "__main__":
    main()
