"""The benchmark's markdown table and plot, from the figures ``__main__`` collected."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .grpc_channel import ONE_CHANNEL
from .raw import describe_threads

PROTOCOL_NAMES = {"predict": "/predict (PNG)", "v2-http": "V2 REST binary", "grpc": "V2 gRPC"}


def median(rounds: list[dict], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(values) if values else None


class TargetRow(NamedTuple):
    target: str
    measured: str  # the median of the rounds, with what it was computed from
    rounds: str  # the lowest and highest round, to show how firm the median is
    threshold: str
    met: bool


def spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def one_channel_row(rounds: list[dict]) -> TargetRow:
    """Issue 19's promise: calls sharing one gRPC channel (one connection, so one worker) still use the cores."""
    ratios = [r[f"resnet18_{ONE_CHANNEL}_ratio"] for r in rounds]
    ratio = statistics.median(ratios)
    batch = median(rounds, f"resnet18_{ONE_CHANNEL}_c64_mean_batch") or 0.0
    return TargetRow("resnet18-digits, 64 calls on one gRPC channel (Python grpc.aio), served ÷ raw ONNX Runtime best",
                     f"{ratio:.2f} ({median(rounds, f'resnet18_{ONE_CHANNEL}_c64'):.0f} calls/s; mean batch "
                     f"{batch:.1f})", spread(ratios), "≥ 0.80, mean batch ≥ 16", ratio >= 0.80 and batch >= 16)


def mean_batch_row(rounds: list[dict], protocols: list[str]) -> TargetRow:
    """Issue 19's promise: batches form on every protocol, judged on the protocol whose median batch is smallest
    (a round where the server's metrics missed a protocol counts as a batch of 0)."""
    def batch(r: dict, protocol: str) -> float:
        return r.get(f"resnet18_{protocol}_c64_mean_batch") or 0.0

    medians = {p: statistics.median(batch(r, p) for r in rounds) for p in protocols}
    lowest = min(medians, key=medians.get)
    detail = ", ".join(f"{PROTOCOL_NAMES[p]} {b:.1f}" for p, b in medians.items())
    return TargetRow("resnet18-digits, 64 clients, mean batch on every protocol (the lowest)",
                     f"{medians[lowest]:.1f} images, {PROTOCOL_NAMES[lowest]} ({detail})",
                     spread([min(batch(r, p) for p in protocols) for r in rounds], 1), "≥ 16", medians[lowest] >= 16)


def target_rows(results: dict) -> list[TargetRow]:
    """One row per promise, judged on the median of the rounds."""
    targets = results.get("targets", {})
    rounds = targets.get("rounds")
    if not rounds:
        return []
    rows = []
    resnet_paths = {p: [r[f"resnet18_{p}_ratio"] for r in rounds] for p in PROTOCOL_NAMES}
    best_path = max(resnet_paths, key=lambda p: statistics.median(resnet_paths[p]))
    ratio = statistics.median(resnet_paths[best_path])
    detail = ", ".join(f"{PROTOCOL_NAMES[p]} {statistics.median(v):.2f}" for p, v in resnet_paths.items())
    variant = targets.get("precision", {}).get("resnet18-digits", "fp32")
    raw = results["raw"]["resnet18-digits"]
    best = raw.get("variants", {}).get(variant, raw)["best"]
    detail += (f"; raw {variant.upper()}: batch {best['batch']}, {describe_threads(best)}, "
               f"{median(rounds, f'resnet18_{best_path}_raw'):.0f} images/s")
    rows.append(TargetRow(f"resnet18-digits, 64 clients, served ({variant.upper()}) ÷ raw ONNX Runtime best of the "
                          "same variant",
                          f"{ratio:.2f} ({detail})",
                          spread(resnet_paths[best_path]), "≥ 0.80", ratio >= 0.80))
    if "resnet18_auto_vs_fp32" in rounds[0]:
        speedups = [r["resnet18_auto_vs_fp32"] for r in rounds]
        speedup = statistics.median(speedups)
        rows.append(TargetRow(f"resnet18-digits, 64 clients, V2 REST, precision auto ({variant.upper()}) ÷ the same "
                              "served as FP32", f"{speedup:.2f} ({median(rounds, 'resnet18_auto_c64'):.0f} vs "
                              f"{median(rounds, 'resnet18_fp32_c64'):.0f} req/s)", spread(speedups), "≥ 1.60",
                              speedup >= 1.6))
    vs_fastapi = [r["lenet5_vs_fastapi"] for r in rounds]
    fastapi_ratio = statistics.median(vs_fastapi)
    rows.append(TargetRow("lenet5-digits, 64 clients, V2 REST ÷ FastAPI baseline (perf_analyzer)",
                          f"{fastapi_ratio:.2f} ({median(rounds, 'lenet5_v2-http_c64'):.0f} vs "
                          f"{median(rounds, 'lenet5_fastapi_c64'):.0f} req/s)", spread(vs_fastapi), "≥ 1.30",
                          fastapi_ratio >= 1.3))
    vs_noop = [r["lenet5_vs_noop_v2"] for r in rounds]
    noop_ratio = statistics.median(vs_noop)
    vs_bare = statistics.median(r["lenet5_vs_noop"] for r in rounds)
    rows.append(TargetRow("lenet5-digits, 64 clients, V2 REST infer ÷ the V2 no-op route on the same server (wrk)",
                          f"{noop_ratio:.2f} ({median(rounds, 'lenet5_wrk_infer_c64'):.0f} vs "
                          f"{median(rounds, 'noop_v2_wrk_c64'):.0f} req/s; ÷ the bare no-op POST {vs_bare:.2f}, "
                          f"{median(rounds, 'noop_wrk_c64'):.0f} req/s)", spread(vs_noop), "≥ 0.50",
                          noop_ratio >= 0.5))
    rows.append(mean_batch_row(rounds, [p for p in PROTOCOL_NAMES if f"resnet18_{p}_c64_mean_batch" in rounds[0]]))
    if f"resnet18_{ONE_CHANNEL}_ratio" in rounds[0]:
        rows.append(one_channel_row(rounds))
    for name, facts in results["raw"].items():
        key = f"{name}_predict_c1_p50_ms"
        if key not in rounds[0]:
            continue
        served, in_turn = median(rounds, key), median(rounds, f"{name}_decode_then_run_ms")
        added_by_round = [r[f"{name}_c1_added_ms"] for r in rounds]
        added = statistics.median(added_by_round)
        apart = median(rounds, f"{name}_raw_b1_ms") + facts["decode_ms"]
        served_variant = targets.get("precision", {}).get(name, "fp32").upper()
        rows.append(TargetRow(f"{name}, 1 client, /predict p50 − in-process decode + batch-1 run ({served_variant}, "
                              "as served)",
                              f"{added:.2f} ms (paired; /predict {served:.2f}, in process {in_turn:.2f}, "
                              f"or {apart:.2f} measured apart)", spread(added_by_round), "≤ 2 ms", added <= 2))
    serving = results["serving"]
    used = serving["workers"] * serving["threads"]
    rows.append(TargetRow("workers × ONNX Runtime threads ≤ cores (defaults)",
                          f"{serving['workers']} × {serving['threads']} = {used} "
                          f"({targets.get('worker_processes')} worker processes seen)", "the same", f"≤ {serving['cores']}",
                          used <= serving["cores"] and targets.get("worker_processes") == serving["workers"]))
    return rows


def raw_rows(results: dict) -> list[str]:
    lines = ["| model | input | batch 1 (best threads) | best | decode one PNG | decode, then run it alone |",
             "|---|---|---|---|---|---|"]
    for name, facts in results["raw"].items():
        one, best, in_turn = facts["batch1"], facts["best"], facts["decode_then_run"]
        lines.append(
            f"| {name} | {'×'.join(map(str, facts['input_shape']))} | {one['p50_ms']:.2f} ms "
            f"({one['images_per_s']:.0f} img/s, {one['threads']} thr) | {best['images_per_s']:.0f} img/s "
            f"(batch {best['batch']}, {describe_threads(best)}) | {facts['decode_ms']:.2f} ms | "
            f"{in_turn['p50_ms']:.2f} ms ({in_turn['threads']} thr) |"
        )
        for variant, figures in facts.get("variants", {}).items():
            one, best = figures["batch1"], figures["best"]
            lines.append(f"| {name} ({variant.upper()}) | | {one['p50_ms']:.2f} ms ({one['images_per_s']:.0f} img/s, "
                         f"{one['threads']} thr) | {best['images_per_s']:.0f} img/s (batch {best['batch']}, "
                         f"{describe_threads(best)}) | | |")
    return lines


def served_rows(results: dict) -> list[str]:
    lines = [
        "| model | path | precision | batching | clients | req/s | p50 ms | p99 ms | ÷ raw best (same precision) "
        "| mean batch | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [{**r, "path": PROTOCOL_NAMES[r["protocol"]]} for r in results["served"]]
    rows += [{**r, "path": "FastAPI baseline (V2 REST)", "batching": "none"} for r in results["baseline"]]
    for r in rows:
        variant = r.get("precision", "fp32")  # the baseline serves model.onnx
        raw = results["raw"][r["model"]]
        best = raw.get("variants", {}).get(variant, raw)["best"]["images_per_s"]
        batch = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "-"
        lines.append(
            f"| {r['model']} | {r['path']} | {variant.upper()} | {r['batching']} | {r['concurrency']} | "
            f"{r['throughput_rps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput_rps'] / best:.2f} | {batch} | {r['errors']} |"
        )
    return lines


def zoom_rows(results: dict) -> list[str]:
    """The zoom-in pass on against off, side by side per model, images and clients."""
    lines = ["| model | images | clients | req/s, zoom on | req/s, off | on ÷ off | p50 ms, on | p50 ms, off |",
             "|---|---|---|---|---|---|---|---|"]
    rows = results.get("zoom", [])
    for on in (r for r in rows if r["zoom_in_below"] > 0):
        off = next(r for r in rows if r["zoom_in_below"] == 0 and all(
            r[k] == on[k] for k in ("model", "images", "concurrency")))
        lines.append(
            f"| {on['model']} | {on['images']} | {on['concurrency']} | {on['throughput_rps']:.0f} | "
            f"{off['throughput_rps']:.0f} | {on['throughput_rps'] / off['throughput_rps']:.2f} | "
            f"{on['p50_ms']:.2f} | {off['p50_ms']:.2f} |"
        )
    return lines


def device(machine: dict) -> str:
    """What the figures ran on: the CPU provider, or the GPU by name (older results: no provider recorded)."""
    if machine.get("gpu") and isinstance(machine["gpu"], str):
        return f"{machine['gpu']} (driver {machine.get('driver')}) via {machine['provider']}"
    return f"models on {machine.get('provider', 'CPUExecutionProvider')}"


def plot(results: dict, path: Path) -> None:
    models = list(dict.fromkeys(r["model"] for r in results["served"]))
    figure, axes = plt.subplots(len(models), 2, figsize=(12, 3.6 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        speed, latency = axes[row]
        series = {}
        for r in results["served"]:
            if r["model"] == model:
                series.setdefault(f"{PROTOCOL_NAMES[r['protocol']]}, batching {r['batching']}", []).append(r)
        baseline = [r for r in results["baseline"] if r["model"] == model]
        if baseline:
            series["FastAPI baseline"] = baseline
        for label, points in series.items():
            x = [p["concurrency"] for p in points]
            style = "--" if "off" in label or "FastAPI" in label else "-"
            line, = speed.plot(x, [p["throughput_rps"] for p in points], style, marker="o", label=label)
            latency.plot(x, [p["p50_ms"] for p in points], style, marker="o", color=line.get_color())
            latency.plot(x, [p["p99_ms"] for p in points], style, marker="^", color=line.get_color(), alpha=0.45)
        raw = results["raw"][model]
        for (variant, figures), style in zip({"fp32": raw, **raw.get("variants", {})}.items(), (":", "-.")):
            speed.axhline(figures["best"]["images_per_s"], color="black", linestyle=style,
                          label=f"raw ONNX Runtime {variant.upper()}, best batch")
        speed.set(title=f"{model}: throughput", xlabel="concurrent clients", ylabel="requests/s (1 image each)",
                  xscale="log", ylim=(0, None))
        latency.set(title=f"{model}: latency (● p50, ▲ p99)", xlabel="concurrent clients", ylabel="ms",
                    xscale="log", yscale="log")
        for axis in (speed, latency):
            axis.set_xticks(sorted({p["concurrency"] for p in results["served"]}))
            axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            axis.grid(alpha=0.3)
        speed.legend(fontsize=7)
    figure.suptitle(f"cnnserve on {results['machine']['cpu']} ({results['machine']['cores']} cores), "
                    f"{device(results['machine'])}, {results['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def how_targets_are_measured(targets: dict) -> list[str]:
    if not targets.get("rounds"):
        return []
    passes = targets["passes"]
    return [f"Each row is the median of {len(targets['rounds'])} rounds on one server. Within a round, the two sides "
            f"of a ratio are measured in turn, {passes['ratios']} times over ({passes['one_client']} for the difference "
            "of the one-client rows), and the median of those passes is the round's figure, so that a slow spell "
            "of the machine lands on both sides.", ""]


def write_report(results: dict, folder: Path) -> str:
    """Write bench.md and bench.png into ``folder``; return the targets table (for the console)."""
    machine = results["machine"]
    serving = results["serving"]
    targets = ["| target | measured (median of rounds) | rounds (lowest–highest) | threshold | met |",
               "|---|---|---|---|---|"]
    targets += [f"| {r.target} | {r.measured} | {r.rounds} | {r.threshold} | {'yes' if r.met else '**no**'} |"
                for r in target_rows(results)]
    lines = [
        f"# cnnserve benchmark, {results['date']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{device(machine)}; Python {machine['python']}, ONNX Runtime {machine['onnxruntime']} "
        f"({', '.join(machine['providers'])}), BentoML {machine['bentoml']}. Server defaults: "
        f"{serving['workers']} workers × {serving['threads']} ONNX Runtime thread(s). Clients run on the same "
        "machine (perf_analyzer for V2 REST and gRPC, wrk for /predict and the no-op), and share its cores.",
        "",
        f"Made by `{results['command']}` in {results['minutes']} min. Raw figures: `bench.json`.",
        "",
        "## Targets",
        "",
        *how_targets_are_measured(results.get("targets", {})),
        *targets,
        "",
        "## The limit: raw ONNX Runtime, in process",
        "",
        *raw_rows(results),
        "",
        "The last column decodes one of the PNG files `/predict` is sent, then runs it at batch 1, image after "
        "image: what a script without a server pays per image, and the baseline of the one-client targets. It "
        "costs more than the two columns before it added, as each step finds the caches full of the other's data.",
        "",
        "## Served, one image per request",
        "",
        "![throughput and latency](bench.png)",
        "",
        *served_rows(results),
        "",
    ]
    if results.get("zoom"):
        lines += ["## What the zoom-in pass costs", "",
                  "`POST /predict` on servers with `zoom_in_below` 0.5 (the default) and 0 (off), wrk, measured "
                  "one after the other: photos from the robustness suite's small-digit condition, where every "
                  "answer takes a second decode of the region around the first box and a second run, and the "
                  "sweep's large-digit PNGs, which never need one.", "", *zoom_rows(results), ""]
    if results.get("explain"):
        lines += ["## What an explanation costs", "",
                  "`POST /explain` with one PNG from the sweep, default window and stride (the answer and 64 occluded "
                  "copies through the model's batcher), one call after another on an otherwise idle server.", "",
                  "| model | occluded copies | p50 ms | p90 ms |", "|---|---|---|---|",
                  *(f"| {r['model']} | {r['occluded_images']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} |"
                    for r in results["explain"]), ""]
    if results.get("profiles"):
        lines += ["## Where the time goes", "",
                  "Server CPU per request by layer, from py-spy on every worker under wrk load (details and the "
                  "functions: each profile's own page).", ""]
        lines += [f"[![{stem}]({stem}.png)]({stem}.md)" for stem in results["profiles"]]
        lines.append("")
    (folder / "bench.md").write_text("\n".join(lines))
    plot(results, folder / "bench.png")
    return "\n".join(targets)
