"""``python -m loadtests.gpu_check`` (``make gpu-check``): does the GPU path do what it says, on this host's GPU?

1. **Provider in use**: a real server, with ``providers`` set explicitly to the one asked (so a provider that does
   not load refuses the model instead of serving it on the CPU: ``host.load_stepping_down``), serves every
   committed model and the untrained ResNet-50 at 224; ``/models`` must show that provider for each, and none
   degraded.
2. **Accuracy on the device**: each committed model's FP32 and FP16 files on its test split, through sessions on
   the asked provider, against the FP32 figures on its card (measured on the CPU). A drop of accuracy over 0.5
   points fails.
3. **cuDNN's algorithm search** (CUDA only): for ResNet-50 at 224 under each ``cudnn_conv_algo_search`` mode, what
   the first run of a new batch size costs and what a warm run costs: the measurement behind the default.
4. **Served answers**: in each server, every model's answers to distinct images sent at once in requests of
   several sizes (so they share batches, padded shapes and, with ``cuda_graphs``, the graphs' fixed buffers) against
   the same images in process on the same provider and file (``served_answers.py``). A difference over 0.01 in a
   probability fails.
5. **Throughput**: resnet18-digits and ResNet-50 at 224, in-process ONNX Runtime on the device (the session the
   server builds, each batch size) against the served V2 REST binary route at each concurrency, with the mean
   batch the server formed; one image per request, and with ``--images-per-request`` also requests that carry
   several (a small model's GPU computes more images a second than Python processes parse requests). The load
   comes from wrk when it is installed, else from the Python load generator, which needs far more of the host's
   cores per request (each row records the client and its CPU per request). Each row also records the cores the
   server's workers used, their event loops apart from their other threads: a busiest loop near one core says
   the requests' parsing was the limit, one with time to spare that something else was. One server for each
   combination of ``--workers``, ``--gpu-batch-shapes`` and ``--cuda-graphs`` (by default the shipping settings;
   ``--cuda-graphs off on`` compares: on CUDA each padded batch size replays a captured graph; the in-process
   figures are then measured with graphs too, and the target's denominator is the best of either).

Writes ``gpu-check.{json,md,png}`` under ``loadtests/results/<date>-gpu/`` (``--out``) and exits 1 on a fallback,
an accuracy drop or a served answer that differs. ``--providers CPUExecutionProvider`` rehearses every step on a host without a GPU (the tests
do that); the figures then say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from cnnserve.contract.card import INPUT_NAME, PROBABILITIES
from cnnserve.machine import available_cores
from cnnserve.serving.config import CUDNN_SEARCH_MODES, GPU_BATCH_SHAPES
from cnnserve.serving.repository import ModelVersion, discover
from cnnserve.serving.runtime import (
    CUDA,
    PREFERENCE,
    TENSORRT,
    LoadedModel,
    load_model,
    preload_gpu_libraries,
    tensorrt_version,
)

from .bench.cpu_budget import WorkerSampler, server_workers
from .bench.http_load import http_load
from .bench.machine import describe_machine, gpu_memory_held
from .bench.raw import time_calls
from .bench.served import v2_binary_load
from .bench.wrk import wrk
from .local_server import running_server
from .predict_bench import batch_totals
from .served_answers import TOLERANCE, compare, served_probabilities

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "loadtests" / "results"
COMMITTED = ("lenet5-digits", "resnet18-digits", "vgg11-digits")
BENCH_MODELS = ("resnet50-imagenet-untrained",)
THROUGHPUT_MODELS = ("resnet18-digits", "resnet50-imagenet-untrained")
ACCURACY_DROP_POINTS = 0.5
BATCH_SIZES = (1, 8, 16, 32, 64, 128, 256)
NEW_SIZES = (3, 17, 45)  # batch sizes no earlier run used: what the first run of a new shape costs


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def device_report(provider: str, commit: str) -> dict:
    """What ran: GPU, driver, CUDA and cuDNN as ONNX Runtime loaded them, versions, commit."""
    report = {
        "date": datetime.date.today().isoformat(), "commit": commit, **describe_machine(provider),
        "onnxruntime_package": next((d for d in ("onnxruntime-gpu", "onnxruntime") if _version(d)), None),
        "build_info": ort.get_build_info() if hasattr(ort, "get_build_info") else None,
    }
    report["cuda_runtime"] = _library_version("libcudart.so", "cudaRuntimeGetVersion")
    report["cudnn"] = _library_version("libcudnn.so.9", "cudnnGetVersion", returns=True)
    report["tensorrt"] = tensorrt_version()
    return report


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _library_version(name: str, function: str, returns: bool = False) -> int | None:
    """A CUDA library's version, from the copy this process loaded (after ``preload_dlls``), if any."""
    candidates = [name] if returns else [f"{name}.13", f"{name}.12"]
    for candidate in candidates:
        try:
            library = ctypes.CDLL(candidate)
        except OSError:
            continue
        if returns:
            getattr(library, function).restype = ctypes.c_size_t
            return int(getattr(library, function)())
        value = ctypes.c_int(0)
        getattr(library, function)(ctypes.byref(value))
        return value.value
    return None


def latest_versions(models_dir: Path, names: tuple[str, ...]) -> list[ModelVersion]:
    if not models_dir.is_dir():
        return []
    repository = discover(models_dir, names)
    return [max(repository.models[name].values(), key=lambda v: v.version) for name in names if name in repository.models]


def provider_list(provider: str) -> list[str]:
    """What the server asks for to run on ``provider``: the providers after it in preference, down to the CPU
    (TensorRT hands CUDA what it cannot build, as in production)."""
    return list(PREFERENCE[PREFERENCE.index(provider):])


def session(model: ModelVersion, provider: str, variant: str, cudnn_search: str = "EXHAUSTIVE",
            max_batch_size: int = 64, cuda_graphs: bool = False) -> LoadedModel:
    """The session the server would build for ``variant`` on ``provider`` (device 0; TensorRT's profile up to
    ``max_batch_size``)."""
    return load_model(model, provider_list(provider), variant, available_cores(),
                      Path(tempfile.gettempdir()) / "cnnserve-gpu-check-tensorrt", cudnn_search=cudnn_search,
                      max_batch_size=max_batch_size, cuda_graphs=cuda_graphs)


def check_accuracy(versions: list[ModelVersion], provider: str, variants: list[str]) -> list[dict]:
    from cnnserve.training.data import card_test_split
    from cnnserve.training.train import evaluate

    rows = []
    for model in versions:
        test = card_test_split(model.card)
        card = model.card["files"]["fp32"]["metrics"]
        for variant in variants:
            if variant not in model.variants():
                rows.append({"model": model.key, "variant": variant, "error": "file missing: run `make variants`"})
                continue
            try:
                loaded = session(model, provider, variant)
            except ValueError as exc:  # a variant this provider cannot take (TensorRT and the INT8 files)
                rows.append({"model": model.key, "variant": variant, "error": str(exc)})
                continue
            figures = evaluate(lambda images, loaded=loaded: batched_run(loaded, images), test)
            drop = round(100 * (card["accuracy"] - figures["accuracy"]), 2)
            rows.append({"model": model.key, "variant": variant, "provider": loaded.providers[0], **figures,
                         "card_fp32_accuracy": card["accuracy"], "card_fp32_mean_iou": card["mean_iou"],
                         "accuracy_drop_points": drop, "passed": loaded.providers[0] == provider
                         and drop <= ACCURACY_DROP_POINTS})
            log(f"accuracy {model.key} {variant} on {loaded.providers[0]}: {figures['accuracy']:.4f} "
                f"(card, CPU FP32: {card['accuracy']:.4f}), mean IoU {figures['mean_iou']:.4f} "
                f"({card['mean_iou']:.4f})")
    return rows


def batched_run(loaded: LoadedModel, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    parts = [loaded.run(np.ascontiguousarray(images[i:i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def timed_first_and_warm(loaded: LoadedModel, seconds: float) -> dict:
    """First-run seconds of each new batch size; median ms per run when every run's size differs from the last
    (those same sizes again, all seen before: what a varying batch pays); warm images/s at batch 1 and 64."""
    first = {}
    for size in NEW_SIZES:
        first[size] = loaded.timed_run(np.zeros((size, *loaded.model.input_shape), np.float32))
    cycling = [loaded.timed_run(np.zeros((size, *loaded.model.input_shape), np.float32)) for size in NEW_SIZES * 3]
    warm = {}
    for size in (1, 64):
        images = np.random.default_rng(0).random((size, *loaded.model.input_shape), dtype=np.float32)
        durations = time_calls(functools.partial(loaded.run, images), seconds)
        warm[size] = size * len(durations) / sum(durations)
    return {"first_run_s": first, "cycling_ms": float(np.median(cycling)) * 1000, "images_per_s": warm}


def compare_cudnn_search(model: ModelVersion, provider: str, seconds: float) -> list[dict]:
    rows = []
    for mode in CUDNN_SEARCH_MODES:
        began = time.perf_counter()
        loaded = session(model, provider, "fp32", mode)
        created = time.perf_counter() - began
        rows.append({"mode": mode, "session_s": created, **timed_first_and_warm(loaded, seconds)})
        row = rows[-1]
        log(f"cuDNN {mode:<10}: session {created:.1f} s, first run of sizes {NEW_SIZES}: "
            f"{', '.join(f'{s:.2f}' for s in row['first_run_s'].values())} s, then cycling through them "
            f"{row['cycling_ms']:.1f} ms per run, warm "
            f"{row['images_per_s'][1]:.0f} images/s at batch 1, {row['images_per_s'][64]:.0f} at 64")
        del loaded
    return rows


def in_process(model: ModelVersion, provider: str, variant: str, seconds: float, sizes,
               cuda_graphs: bool = False) -> list[dict]:
    """Images/s at each batch size on one session, or with ``cuda_graphs`` on a session per size replaying a CUDA
    graph (CUDA only: none elsewhere, nor where the graphs cannot be made)."""
    loaded = session(model, provider, variant, max_batch_size=max(sizes), cuda_graphs=cuda_graphs)
    if cuda_graphs:
        if loaded.open_graphed_session is None:
            return []
        loaded.pad_batches(list(sizes))
        if not loaded.graphed:
            log(f"in-process {model.key} {variant}: CUDA graphs could not be made (the log above says why)")
            return []
    rows = []
    for size in sizes:
        images = np.random.default_rng(0).random((size, *model.input_shape), dtype=np.float32)
        durations = time_calls(functools.partial(loaded.run, images), seconds)
        rows.append({"batch": size, "cuda_graphs": cuda_graphs, "images_per_s": size * len(durations) / sum(durations),
                     "p50_ms": float(np.median(durations)) * 1000})
        log(f"in-process {model.key} {variant} on {loaded.providers[0]}{', CUDA graphs' if cuda_graphs else ''}, "
            f"batch {size:>3}: {rows[-1]['images_per_s']:8.0f} images/s, {rows[-1]['p50_ms']:7.2f} ms per call")
    return rows


ANSWER_IMAGES = 192


def answer_images(model: ModelVersion) -> np.ndarray:
    """Distinct images for the served-answers check: a digits model's test split, else seeded noise."""
    if model.card.get("trained"):
        from cnnserve.training.data import card_test_split

        return np.ascontiguousarray(card_test_split(model.card)[0][:ANSWER_IMAGES], np.float32)
    return np.random.default_rng(7).random((ANSWER_IMAGES // 3, *model.input_shape), dtype=np.float32)


def reference_probabilities(model: ModelVersion, provider: str, variant: str, images: np.ndarray) -> np.ndarray:
    """``images`` through a plain ONNX Runtime session of the file the server runs, with none of the server's
    own loading (padding, graphs, options), in batches of 64. On CUDA where TensorRT was asked: TensorRT would build
    an engine for each batch shape, and the served FP16 engine differs from the file by its rounding alone."""
    reference_provider = CUDA if provider == TENSORRT else provider
    plain = ort.InferenceSession(str(model.file_for(variant)[0]), providers=provider_list(reference_provider))
    return np.concatenate([plain.run([PROBABILITIES], {INPUT_NAME: np.ascontiguousarray(images[i:i + 64])})[0]
                           for i in range(0, len(images), 64)])


def check_answers(server, models: list[ModelVersion], provider: str, served_models: dict, references: dict,
                  setting: dict, failures: list[str]) -> list[dict]:
    """Each model's served answers against in process (``served_answers.py``); ``references`` keeps each model's
    images and reference answers for the next server."""
    rows = []
    for model in models:
        entry = served_models.get(model.name, {})
        if entry.get("status") != "ready":  # check_served has failed the check for it already
            continue
        variant = entry.get("precision") or "fp32"
        try:
            if (model.name, variant) not in references:
                images = answer_images(model)
                references[model.name, variant] = images, reference_probabilities(model, provider, variant, images)
            images, reference = references[model.name, variant]
            row = compare(served_probabilities(server.url, model.name, images), reference)
        except Exception as exc:  # noqa: BLE001  (a request the server failed, a session that would not open: the
            # check goes on to the next model and reports this one failed)
            row = {"error": f"{type(exc).__name__}: {exc}", "passed": False}
        rows.append({"model": model.name, "variant": variant, **setting, **row})
        log(f"served answers {model.name} ({variant}, {setting}): "
            + (row.get("error") or f"largest difference {row['largest_difference']:.2g} (to the next image's answers "
               f"{row['neighbour_difference']:.2g}), {row['other_label']} of {row['images']} labels differ"))
        if not row["passed"]:
            failures.append(f"{model.name} {variant} served with {setting}: answers differ from in process: "
                            f"{row.get('error') or row['largest_difference']}")
    return rows


def served_models_dir(models_dir: Path, bench_dir: Path, tmp: Path) -> Path:
    """One folder for the server: the committed models beside the untrained ResNet-50 (links, nothing copied)."""
    folder = tmp / "models"
    folder.mkdir()
    for source in [*(models_dir / n for n in COMMITTED), *(bench_dir / n for n in BENCH_MODELS)]:
        if source.is_dir():
            (folder / source.name).symlink_to(source.resolve())
    return folder


def listing(server) -> dict[str, dict]:
    """Per model: status, provider and precision of its default version, from ``GET /models``."""
    body = httpx.get(f"{server.url}/models", timeout=30).json()
    out = {entry["name"]: next(v for v in entry["versions"] if v["version"] == entry["default_version"])
           for entry in body["models"]}
    out.update({f["model"]: {"status": "failed", "reason": f["reason"]} for f in body.get("failed", [])})
    return out


SERVER_HISTOGRAMS = {"mean_batch": "cnnserve_batch_size_images", "compute_ms": "cnnserve_compute_duration_seconds",
                     "queue_ms": "cnnserve_queue_duration_seconds"}


def server_means(server, model: str, before: dict | None = None) -> dict:
    """Sum and count of the server's batch, compute and queue histograms; with ``before``, the means since then."""
    page = httpx.get(f"{server.url}/metrics", timeout=30).text
    totals = {key: batch_totals(page, model, family) for key, family in SERVER_HISTOGRAMS.items()}
    if before is None:
        return totals
    means = {}
    for key, (total, count) in totals.items():
        count -= before[key][1]
        means[key] = (total - before[key][0]) / count * (1000 if key.endswith("_ms") else 1) if count else None
    return means


WRK_THREADS = 4  # wrk's threads on a GPU host: about 0.02 ms of a core per request (measured on 2 cores)


def client_for(choice: str) -> str:
    """``wrk`` or ``python``: ``auto`` takes wrk where it is installed. The Python load generator costs the host
    several times wrk's CPU per request (one process sends about 3,000 a second), cores the server's workers then
    lack: on a 16-core H100 host, ResNet-18 at 256 clients ran eight of them beside the server."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return choice


def served(server, model: ModelVersion, concurrencies: list[int], seconds: float, images: int = 1,
           client: str = "python") -> list[dict]:
    """One row per concurrency: the load's figures, the server's batch means, and the cores its workers used
    (``worker_cores``): whether the event loops were the limit (a busiest loop near 1.0) or had time to spare."""
    load = v2_binary_load(model, images=images)
    rows = []
    for concurrency in concurrencies:
        before, (workers, _) = server_means(server, model.name), server_workers(server)
        with WorkerSampler(workers) as sampler:
            if client == "wrk":
                figures = wrk(server.url, load, concurrency, seconds, threads=WRK_THREADS)
            else:
                figures = http_load(server.url, load, concurrency, seconds)
        start, end = figures.pop("window")
        cores = sampler.cores(start + 0.1 * (end - start), end) or {}  # past the connections' opening
        rows.append({"concurrency": concurrency, "images_per_request": images, "client": client, **figures,
                     "images_per_s": figures["throughput_rps"] * images, **server_means(server, model.name, before),
                     "workers_sampled": len(workers), **{f"{key}_cores": value for key, value in cores.items()}})
        row = rows[-1]
        log(f"served {model.key} V2 binary, {images} image(s) per request, {concurrency:>3} clients ({client}): "
            f"{figures['throughput_rps']:8.0f} req/s, "
            f"p50 {figures['p50_ms'] or 0:7.2f} ms, mean batch {row['mean_batch'] or 0:5.1f}, compute "
            f"{row['compute_ms'] or 0:.2f} ms and queue {row['queue_ms'] or 0:.2f} ms per batch / request, cores: "
            f"{_cores(row)}, errors {figures['errors']} {figures.get('statuses', '')}")
    return rows


def save_so_far(results: dict, folder: Path) -> None:
    """``gpu-check.json`` with what has been measured: a lent GPU machine's time runs out, and what a stopped
    check had measured should not go with it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gpu-check.json").write_text(json.dumps(results, indent=2, default=str))


def run(args) -> dict:
    preload_gpu_libraries(ort.get_available_providers())
    args.client = client_for(args.client)
    results = {"device": device_report(args.providers, args.commit), "client": args.client, "failures": [],
               "finished": False}
    log(f"device: {json.dumps(results['device'])}")
    committed = latest_versions(args.models_dir, tuple(args.models))
    bench = [v for v in latest_versions(args.bench_dir, BENCH_MODELS) if v.name in args.throughput_models]
    failures = results["failures"]

    results["accuracy"] = check_accuracy(committed, args.providers, args.variants) if args.accuracy else []
    failures += [f"{r['model']} {r['variant']}: {r.get('error') or 'accuracy or provider'}" for r in results["accuracy"]
                 if not r.get("passed")]
    save_so_far(results, args.out)
    if args.providers == CUDA and bench and args.cudnn:  # TensorRT does not use cuDNN's search
        results["cudnn_search"] = compare_cudnn_search(bench[0], args.providers, args.seconds)

    results["throughput"] = {}
    throughput_models = [v for v in committed if v.name in args.throughput_models] + bench
    servers = itertools.product(args.workers, args.gpu_batch_shapes, args.cuda_graphs)
    references = {}  # per model and file: the served-answers check's images and in-process answers
    for index, (workers, shapes, graphs) in enumerate(servers):
        with tempfile.TemporaryDirectory() as tmp:
            models_dir = served_models_dir(args.models_dir, args.bench_dir, Path(tmp))
            settings = {"models_dir": str(models_dir), "providers": ",".join(provider_list(args.providers)),
                        "serve": ",".join([*(m.name for m in committed), *(b.name for b in bench)]),
                        "gpu_batch_shapes": shapes, "cuda_graphs": str(graphs == "on").lower()}
            if workers:
                settings["workers"] = str(workers)
            with running_server(Path(tmp), **settings) as server:
                if index == 0:
                    results["served_models"] = check_served(server, args.providers, failures)
                setting = {"workers": workers or "default", "gpu_batch_shapes": shapes, "cuda_graphs": graphs}
                results.setdefault("answers", []).extend(check_answers(
                    server, [*committed, *bench], args.providers, results["served_models"], references, setting,
                    failures))
                save_so_far(results, args.out)
                for model in throughput_models:
                    variant = results["served_models"][model.name].get("precision") or "fp32"
                    figures = results["throughput"].setdefault(model.name, {"variant": variant, "served": []})
                    for images in args.images_per_request:
                        rows = served(server, model, args.concurrency, args.seconds, images, args.client)
                        in_use = graphs_in_use(server, model)  # after a load: every worker has logged its models
                        figures["served"] += [{"model": model.name, **setting, "graphs_in_use": in_use, **row}
                                              for row in rows]
                        save_so_far(results, args.out)
                results.setdefault("gpu_memory", []).append({**setting, **server_memory(server)})
                results.setdefault("server_log_tails", []).append(server.log()[-4000:])
            # In process once the server has stopped: the GPU memory the server's workers hold (eight, each a session
            # per batch shape and model) left a ResNet-50 batch of 256 beside them no room (H100, 2026-11-28).
            for model in throughput_models:
                figures = results["throughput"][model.name]
                if "in_process" not in figures:
                    figures["in_process"] = [
                        *in_process(model, args.providers, figures["variant"], args.in_process_seconds,
                                    args.batch_sizes),
                        *(in_process(model, args.providers, figures["variant"], args.in_process_seconds,
                                     args.batch_sizes, cuda_graphs=True)
                          if "on" in args.cuda_graphs else [])]
                    save_so_far(results, args.out)
    results["finished"] = True
    return results


def server_memory(server) -> dict:
    """The GPU memory the server's workers hold after its loads (their sessions, arenas and graphs): what decides
    how many workers and batch shapes a smaller GPU can take (none without nvidia-smi)."""
    workers, _ = server_workers(server)
    held = gpu_memory_held({w.pid for w in workers})
    log(f"GPU memory held by the server's {len(workers)} workers: "
        + (f"{held:.0f} MiB, {held / len(workers):.0f} per worker" if held is not None and workers else "not known"))
    return {"workers_running": len(workers), "mib": held}


def graphs_in_use(server, model: ModelVersion) -> dict[str, int]:
    """Of the server's workers that logged ``model`` ready (``loaded``), how many replay CUDA graphs (``graphed``):
    each worker captures its own, and one can fail where another does not; ``GET /models`` answers for one worker."""
    ready = [line for line in server.log().splitlines() if f"model {model.key} ready on" in line]
    return {"graphed": sum("replaying a CUDA graph" in line for line in ready), "loaded": len(ready)}


def check_served(server, provider: str, failures: list[str]) -> dict:
    """``GET /models`` per model, each checked against the provider asked."""
    served_models = listing(server)
    for name, entry in served_models.items():
        log(f"served {name}: {entry['status']} on {entry.get('provider')} ({entry.get('precision')})"
            f"{' - ' + entry['reason'] if entry.get('reason') else ''}")
        if entry["status"] != "ready" or entry.get("provider") != provider:
            failures.append(f"{name} is {entry['status']} on {entry.get('provider')}, {provider} was asked")
    return served_models


def summary_rows(results: dict) -> list[tuple[str, str, bool | None]]:
    """(what, measured, met) for each target of issue 20 (None: not applicable on this provider)."""
    served_models = results.get("served_models", {})
    rows = [("every model served on the provider asked, none degraded",
             ", ".join(f"{n}: {e['status']} on {e.get('provider')}" for n, e in served_models.items()) or "not reached",
             bool(served_models) and all(e["status"] == "ready" and e.get("provider") == results["device"]["provider"]
                                         for e in served_models.values()))]
    accuracy = [r for r in results.get("accuracy", []) if "accuracy" in r]
    rows += [] if not results.get("accuracy") else [(f"FP32 and FP16 accuracy within {ACCURACY_DROP_POINTS} points of the card's CPU FP32",
                 ", ".join(f"{r['model']} {r['variant']} {r['accuracy_drop_points']:+.2f}" for r in accuracy),
                 all(r.get("passed") for r in results["accuracy"]))]
    if results.get("answers"):
        rows.append((f"served answers within {TOLERANCE} of in process, every model and server",
                     ", ".join(f"{r['model']} {r['largest_difference']:.2g}" if "largest_difference" in r
                               else f"{r['model']} failed" for r in results["answers"]),
                     all(r["passed"] for r in results["answers"])))
    graphed = [r for f in results.get("throughput", {}).values() for r in f["served"] if r.get("cuda_graphs") == "on"]
    if graphed and results["device"]["provider"] == CUDA:
        rows.append(("CUDA graphs in use in every server that asked for them",
                     ", ".join(dict.fromkeys(f"{r['model']} {_graphed_of(r)} workers" for r in graphed)),
                     all(_every_worker_graphed(r) for r in graphed)))
    for name, figures in results.get("throughput", {}).items():
        best = max((r["images_per_s"] for r in figures.get("in_process", [])), default=None)
        for setting in dict.fromkeys(_served_setting(r) for r in figures["served"]):
            at = {r["concurrency"]: r for r in figures["served"] if _served_setting(r) == setting}
            top, images = max(at), setting[1]
            setting = _setting_label(*setting)
            rows.append((f"{name}, {setting}: served images/s at {top} clients / in-process best >= 0.5",
                         f"{at[top]['images_per_s']:.0f} / {best:.0f} = {at[top]['images_per_s'] / best:.2f}" if best
                         else f"{at[top]['images_per_s']:.0f} / not measured (stopped first)",
                         bool(best) and at[top]["images_per_s"] / best >= 0.5))
            if 64 in at and images == 1:
                rows.append((f"{name}, {setting}: mean batch at 64 clients >= 32", f"{at[64]['mean_batch'] or 0:.1f}",
                             (at[64]["mean_batch"] or 0) >= 32))
    return rows


def _served_setting(row: dict) -> tuple:
    return row["workers"], row["images_per_request"], row["gpu_batch_shapes"], row.get("cuda_graphs", "off")


def _setting_label(workers, images: int, shapes: str, graphs: str, only: set[int] | None = None) -> str:
    """The setting in words; ``only``: just the parts at these places (those a plot's series differ in)."""
    parts = [f"workers {workers}", f"{images} image{'s' if images > 1 else ''} per request",
             f"GPU batch shapes {shapes}", f"CUDA graphs {graphs}"]
    return ", ".join(part for place, part in enumerate(parts) if only is None or place in only)


REMOVED_SETTINGS = {"shared_batches": "off"}  # a setting the servers no longer have: its value they now always run


def without_removed_settings(results: dict) -> tuple[dict, int]:
    """An earlier run's results (``--report-from``) less the rows of servers whose setting no longer exists (one
    batcher per GPU, removed after the H100 run of 2026-11-28): tabled beside today's settings they would read as
    a second measurement of the same server. Returns the copy and how many rows it left out."""
    def kept(row: dict) -> bool:
        return all(row.get(name, value) == value for name, value in REMOVED_SETTINGS.items())
    out = {**results, "answers": [r for r in results.get("answers", []) if kept(r)],
           "throughput": {name: {**figures, "served": [r for r in figures["served"] if kept(r)]}
                          for name, figures in results.get("throughput", {}).items()}}
    rows = len(results.get("answers", [])) + sum(len(f["served"]) for f in results.get("throughput", {}).values())
    return out, rows - len(out["answers"]) - sum(len(f["served"]) for f in out["throughput"].values())


def write_report(results: dict, folder: Path) -> Path:
    save_so_far(results, folder)
    results, left_out = without_removed_settings(results)
    device = results["device"]
    lines = [f"# GPU check, {device['date']}", "",
             (f"{device.get('gpu') or 'no GPU'} (driver {device.get('driver')}, compute capability "
              f"{device.get('compute_capability')}), {device['cores']} cores; ONNX Runtime {device['onnxruntime']} "
              f"({device['onnxruntime_package']}), CUDA runtime {device.get('cuda_runtime')}, cuDNN "
              f"{device.get('cudnn')}; provider asked: {device['provider']}; commit {device['commit']}."), "",
             "| target | measured | met |", "|---|---|---|"]
    if left_out:
        lines[-2:-2] = [f"{left_out} rows of servers with a setting since removed ("
                        + ", ".join(f"{n} other than {v}" for n, v in REMOVED_SETTINGS.items())
                        + ") are left out; `gpu-check.json` keeps them.", ""]
    if not results.get("finished", True):
        lines[-2:-2] = ["**Stopped before the end** (out of time, or failed): the figures below are those measured until "
                        "then.", ""]
    lines += [f"| {what} | {measured} | {'yes' if met else 'no'} |" for what, measured, met in summary_rows(results)]
    lines += ["", "## Accuracy on the test split", "",
              "| model | file | provider | accuracy | mean IoU | card FP32 (CPU) | drop (points) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['variant']} | {r.get('provider', '-')} | {r.get('accuracy', '-')} | "
              f"{r.get('mean_iou', '-')} | {r.get('card_fp32_accuracy', '-')} / {r.get('card_fp32_mean_iou', '-')} | "
              f"{r.get('accuracy_drop_points', r.get('error'))} |" for r in results.get("accuracy", [])]
    if results.get("answers"):
        lines += ["", "## Served answers against in process (same provider and file)", "",
                  "| model | file | workers | GPU batch shapes | CUDA graphs | images | largest difference "
                  "| other label | to the next image's answers (would a mix-up show?) |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['variant']} | {r['workers']} | {r['gpu_batch_shapes']} | "
                  f"{r['cuda_graphs']} | {r.get('images', '-')} | {r.get('largest_difference', r.get('error'))} | "
                  f"{r.get('other_label', '-')} | {_telling(r)} |" for r in results["answers"]]
    if results.get("gpu_memory"):
        lines += ["", "## GPU memory the servers' workers held after their loads (nvidia-smi)", "",
                  "| workers | GPU batch shapes | CUDA graphs | workers running | MiB | MiB per worker |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['workers']} | {r['gpu_batch_shapes']} | {r['cuda_graphs']} | {r['workers_running']} | "
                  + (f"{r['mib']:.0f} | {r['mib'] / r['workers_running']:.0f} |" if r["mib"] is not None
                     and r["workers_running"] else "not known | - |") for r in results["gpu_memory"]]
    if results.get("cudnn_search"):
        lines += ["", "## cuDNN algorithm search, ResNet-50 at 224, FP32", "",
                  (f"| mode | session (s) | first run of new sizes {NEW_SIZES} (s) | ms per run cycling through them "
                   "| warm images/s, batch 1 | batch 64 |"), "|---|---|---|---|---|---|"]
        lines += [f"| {r['mode']} | {r['session_s']:.1f} | {', '.join(f'{s:.2f}' for s in r['first_run_s'].values())} | "
                  f"{r.get('cycling_ms', 0):.1f} | {r['images_per_s'][1]:.0f} | {r['images_per_s'][64]:.0f} |"
                  for r in results["cudnn_search"]]
    for name, figures in results.get("throughput", {}).items():
        lines += ["", f"## {name} ({figures['variant']})", "", "| in-process batch | CUDA graphs | images/s | ms per call |",
                  "|---|---|---|---|"]
        lines += [f"| {r['batch']} | {'on' if r.get('cuda_graphs') else 'off'} | {r['images_per_s']:.0f} | {r['p50_ms']:.2f} |"
                  for r in figures.get("in_process", [])]
        lines += ["", ("| workers | GPU batch shapes | CUDA graphs (workers using them) | images per request | "
                       "served clients (V2 REST binary) | requests/s | "
                       "images/s | p50 ms | p99 ms | mean batch | compute ms per batch | queue ms | "
                       "workers' cores: event loops (busiest) | their other threads | errors | "
                       "client (CPU ms per request) |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['workers']} | {r['gpu_batch_shapes']} | "
                  f"{r.get('cuda_graphs', 'off')} ({_graphed_of(r)}) | {r['images_per_request']} | "
                  f"{r['concurrency']} | {r['throughput_rps']:.0f} | "
                  f"{r['images_per_s']:.0f} | {r['p50_ms'] or 0:.2f} | {r['p99_ms'] or 0:.2f} | "
                  f"{r['mean_batch'] or 0:.1f} | {r['compute_ms'] or 0:.2f} | {r['queue_ms'] or 0:.2f} | "
                  f"{_cores(r)} | {r['errors']} | "
                  f"{r['client']} ({r['client_cpu_ms_per_request'] or 0:.3f}) |"
                  for r in figures["served"]]
    if results["failures"]:
        lines += ["", "## Failures", "", *(f"- {f}" for f in results["failures"])]
    report = folder / "gpu-check.md"
    report.write_text("\n".join(lines) + "\n")
    if any(f["served"] for f in results.get("throughput", {}).values()):
        plot(results, folder / "gpu-check.png")
    return report


def _telling(row: dict) -> str:
    """How far each image's served answers are from its neighbour's reference: under the tolerance, the images'
    answers are too alike (an untrained model's) for the check to see rows mixed up."""
    if "neighbour_difference" not in row:
        return "-"
    return f"{row['neighbour_difference']:.2g} ({'yes' if row['neighbour_difference'] > TOLERANCE else 'no: too alike'})"


def _every_worker_graphed(row: dict) -> bool:
    in_use = row.get("graphs_in_use", {"graphed": 0, "loaded": 0})
    return in_use["graphed"] == in_use["loaded"] > 0


def _graphed_of(row: dict) -> str:
    """"graphed/loaded" workers, or "-" for a row measured before the check counted them."""
    return "{graphed}/{loaded}".format(**row["graphs_in_use"]) if "graphs_in_use" in row else "-"


def _cores(row: dict) -> str:
    """Event loops (the busiest) | other threads, of the workers sampled; "-" where unread (a load too short for
    two readings, or a row measured before the check read them)."""
    if "loops_cores" not in row:
        return "- | -"
    return (f"{row['loops_cores']:.2f} ({row['busiest_loop_cores']:.2f}) | {row['others_cores']:.2f} "
            f"({row['workers_sampled']} workers)")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    throughput = {name: figures for name, figures in results["throughput"].items() if figures["served"]}
    series = max(len(dict.fromkeys(_served_setting(r) for r in f["served"])) for f in throughput.values())
    figure, axes = plt.subplots(1, len(throughput), figsize=(max(8, 6 * len(throughput)), 4.5 + 0.2 * series),
                                squeeze=False)
    for axis, (name, figures) in zip(axes[0], throughput.items()):
        settings = list(dict.fromkeys(_served_setting(r) for r in figures["served"]))
        differing = {place for place in range(len(settings[0])) if len({setting[place] for setting in settings}) > 1}
        for setting in settings:
            rows = [r for r in figures["served"] if _served_setting(r) == setting]
            axis.plot([r["concurrency"] for r in rows], [r["images_per_s"] for r in rows], marker="o",
                      label=", ".join(["served, V2 REST binary", _setting_label(*setting, only=differing)]).strip(", "))
            for r in rows:
                axis.annotate(f"batch {r['mean_batch'] or 0:.0f}", (r["concurrency"], r["images_per_s"]), fontsize=7,
                              textcoords="offset points", xytext=(0, 6), ha="center")
        best = max(figures.get("in_process", []), key=lambda r: r["images_per_s"], default=None)
        if best:
            axis.axhline(best["images_per_s"], color="black", linestyle=":", label=f"in-process, best batch ({best['batch']}{', CUDA graphs' if best.get('cuda_graphs') else ''})")
            axis.axhline(best["images_per_s"] / 2, color="grey", linestyle="--", linewidth=1, label="target: half of it")
        axis.set(title=f"{name} ({figures['variant']})", xlabel="concurrent clients", ylabel="images/s", xscale="log",
                 ylim=(0, None))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: the lines stay visible
    device = results["device"]
    figure.suptitle(f"{device.get('gpu') or 'CPU'}, {device['provider']}\nONNX Runtime {device['onnxruntime']}, "
                    f"commit {device['commit']}, {device['date']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("CNNSERVE_COMMIT", "unknown")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", default=CUDA, choices=PREFERENCE, help="the provider the models must run on")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--bench-dir", type=Path, default=REPO_ROOT / "models-bench", help="python -m cnnserve.training bench-models")
    parser.add_argument("--models", nargs="+", default=list(COMMITTED), help="committed models to check")
    parser.add_argument("--variants", nargs="+", default=["fp32", "fp16"], help="files whose accuracy is checked")
    parser.add_argument("--throughput-models", nargs="*", default=list(THROUGHPUT_MODELS),
                        help="models measured in process and served (none: skip the throughput step)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES), help="in-process")
    parser.add_argument("--in-process-seconds", type=float, default=2.0,
                        help="per in-process batch size (a GPU's calls vary little: 2 s holds hundreds of them)")
    parser.add_argument("--images-per-request", type=int, nargs="+", default=[1],
                        help="images each served request carries (one series each)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0],
                        help="server workers, one server each (0: the server's default, eight per GPU)")
    parser.add_argument("--gpu-batch-shapes", nargs="+", default=["powers_of_two"], choices=GPU_BATCH_SHAPES,
                        help="the servers' gpu_batch_shapes, one server each (with each --workers)")
    parser.add_argument("--cuda-graphs", nargs="+", default=["on"], choices=["off", "on"],
                        help="the servers' cuda_graphs, one server each (with each of the above; default: on, the "
                             "server's default; `off on` compares): on, each padded batch size replays a CUDA graph "
                             "(CUDA only), and in process is measured both ways")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                        help="the served load's generator (auto: wrk where it is installed)")
    parser.add_argument("--no-cudnn", dest="cudnn", action="store_false", help="skip the cuDNN search comparison")
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false", help="skip the test-split accuracy")
    parser.add_argument("--commit", default=git_commit())
    parser.add_argument("--out", type=Path, default=RESULTS / f"{datetime.date.today().isoformat()}-gpu")
    parser.add_argument("--report-from", type=Path, metavar="JSON",
                        help="only write the table and plot of an earlier run's gpu-check.json, beside it (a run "
                             "stopped before the end saves what it measured there)")
    args = parser.parse_args(argv)
    if args.report_from:
        results = json.loads(args.report_from.read_text())
        print(write_report(results, args.report_from.parent).read_text())
        return 0 if results.get("finished", True) and not results["failures"] else 1
    available = ort.get_available_providers()
    if args.providers not in available:
        print(f"FAILED: {args.providers} is not in this ONNX Runtime ({ort.__version__}, providers: "
              f"{', '.join(available)}); on a GPU host: pip install '.[gpu]' (make gpu-check does)", file=sys.stderr)
        return 1
    results = run(args)
    report = write_report(results, args.out)
    print(report.read_text())
    if results["failures"]:
        print("FAILED:\n" + "\n".join(f"  {f}" for f in results["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
