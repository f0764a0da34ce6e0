"""Where the cores go per request under load, and the ceiling that puts on served ÷ raw.

    python -m loadtests.bench.cpu_budget --model resnet18-digits --protocols v2-http grpc-one-channel

Raw ONNX Runtime has every core for the model; a served request also pays its
worker's event loop (HTTP or gRPC, the V2 protocol, batching, the answer) and,
when the load runs on the same machine, its client. This loads a real server
(the benchmark's, 2 workers by default) with one protocol at a time and reads
the CPU each thread spent over the middle of the load (``/proc`` through
psutil): the workers' main threads are their event loops; their other threads
compute the batches (and, for gRPC, run gRPC's own threads); the client is
perf_analyzer or wrk, or this process for the Python gRPC client of
``grpc-one-channel``. CPU no thread is charged for (the kernel's loopback
delivery runs as softirq) shows as "unaccounted".

The last column is the share of all that CPU left to the batches: served ÷
raw cannot exceed it unless the batches compute faster than raw does. It
needs no raw figure of its own, so the machine's drift between two
measurements does not enter it. On 2026-11-27 (AMD EPYC, 2 cores) it showed
why ``make bench``'s served ÷ raw stopped at 0.74 and one gRPC channel at 0.47
(docs/architecture.md).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from cnnserve.machine import available_cores
from cnnserve.serving.repository import discover

from ..local_server import running_server
from .grpc_channel import ONE_CHANNEL
from .machine import describe_machine
from .noop_routes import NOOP_SERVICE
from .served import measure

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ("v2-http", "grpc", "predict", ONE_CHANNEL)


def thread_seconds(process: psutil.Process) -> dict[int, float]:
    """CPU seconds of each thread of ``process``, by thread id (empty once it has gone)."""
    try:
        return {t.id: t.user_time + t.system_time for t in process.threads()}
    except psutil.NoSuchProcess:
        return {}


def process_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def clients(server_pids: set[int]) -> list[psutil.Process]:
    """This process (the Python gRPC client runs in it) and its children outside the server: the load."""
    me = psutil.Process()
    return [me, *(p for p in me.children(recursive=True) if p.pid not in server_pids)]


def split(workers: list[psutil.Process], server_pids: set[int], window: float) -> dict:
    """CPU seconds per second over ``window``: the workers' event loops, their other threads, and the load."""
    loops_before = {w.pid: thread_seconds(w) for w in workers}
    load = clients(server_pids)
    load_before = {p.pid: process_seconds(p) for p in load}
    began = time.perf_counter()
    time.sleep(window)
    elapsed = time.perf_counter() - began
    loops = others = 0.0
    for worker in workers:
        before, after = loops_before[worker.pid], thread_seconds(worker)
        for tid, seconds in after.items():
            spent = seconds - before.get(tid, 0.0)
            if tid == worker.pid:
                loops += spent
            else:
                others += spent
    client = sum(process_seconds(p) - load_before[p.pid] for p in load)
    return {"loops": loops / elapsed, "others": others / elapsed, "client": client / elapsed}


def budget_row(server, model, protocol: str, concurrency: int, seconds: float) -> dict:
    """One protocol under load; every share in milliseconds of one core per request (one image each)."""
    children = psutil.Process(server.process.pid).children(recursive=True)
    workers = [p for p in children if "worker" in " ".join(p.cmdline())]
    server_pids = {server.process.pid, *(p.pid for p in children)}
    shares: dict = {}
    sampler = threading.Thread(target=lambda: shares.update(split(workers, server_pids, seconds * 0.6)))
    measure(server, model.name, [1, *model.input_shape], protocol, concurrency, 1.0)  # warm this path
    sampler_start = threading.Timer(seconds * 0.2, sampler.start)
    sampler_start.start()
    row = measure(server, model.name, [1, *model.input_shape], protocol, concurrency, seconds)
    sampler_start.join()
    sampler.join()
    rate = row["throughput_rps"]
    per_request = {name: 1000 * share / rate for name, share in shares.items()}
    unaccounted = max(0.0, 1000 * available_cores() / rate - sum(per_request.values()))
    total = sum(per_request.values()) + unaccounted
    return {"protocol": protocol, "rps": rate, "mean_batch": row["mean_batch"], **per_request,
            "unaccounted": unaccounted, "batch_share": per_request["others"] / total}


def report(model_name: str, variant: str, clients: int, rows: list[dict]) -> str:
    lines = [
        f"{model_name} ({variant.upper()}), {clients} clients; ms of one core per request (one image each):",
        "",
        "| protocol | req/s | mean batch | event loops | batches (and gRPC's threads) | client | unaccounted | "
        "share of the cores left to the batches |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        batch = f"{r['mean_batch']:.1f}" if r["mean_batch"] else "-"
        lines.append(f"| {r['protocol']} | {r['rps']:.0f} | {batch} | {r['loops']:.3f} | {r['others']:.3f} | "
                     f"{r['client']:.3f} | {r['unaccounted']:.3f} | {r['batch_share']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--model", default="resnet18-digits")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=["v2-http", ONE_CHANNEL])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0, help="per protocol; the CPU is read over its middle")
    parser.add_argument("--out", type=Path, help="also write the table, the command and the machine here (.md)")
    args = parser.parse_args()
    model = discover(args.models_dir).resolve(args.model)
    with tempfile.TemporaryDirectory() as tmp, running_server(
            Path(tmp), models_dir=str(args.models_dir.resolve()), target=NOOP_SERVICE, serve=model.name) as server:
        variant = server.client.get("/models").json()["models"][0]["versions"][-1]["precision"]
        rows = []
        for protocol in args.protocols:
            rows.append(budget_row(server, model, protocol, args.clients, args.seconds))
            print(f"{protocol}: {rows[-1]['rps']:.0f} req/s", flush=True)
    table = report(model.name, variant, args.clients, rows)
    print(table)
    if args.out:
        machine = describe_machine()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            f"# CPU per request, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
            f"Made by `python -m loadtests.bench.cpu_budget {' '.join(sys.argv[1:])}` on {machine['cpu']}, "
            f"{machine['cores']} cores, ONNX Runtime {machine['onnxruntime']}, the clients on the same cores."
            f"\n\n{table}\n")


if __name__ == "__main__":
    main()
