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
import contextlib
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


def server_workers(server) -> tuple[list[psutil.Process], set[int]]:
    """A running server's worker processes, and every process id of the server (the arbiter's too)."""
    children = psutil.Process(server.process.pid).children(recursive=True)
    workers = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):  # one that ended meanwhile (a restarting worker)
            if "worker" in " ".join(child.cmdline()):
                workers.append(child)
    return workers, {server.process.pid, *(p.pid for p in children)}


def worker_threads(workers: list[psutil.Process]) -> dict[int, dict[int, float]]:
    """CPU seconds so far of each worker's threads, by worker and thread id: read it before and after a load."""
    return {w.pid: thread_seconds(w) for w in workers}


def worker_cores(before: dict[int, dict[int, float]], after: dict[int, dict[int, float]], elapsed: float) -> dict:
    """Cores used between two ``worker_threads`` readings: ``loops``, the workers' main threads (their event
    loops) together; ``busiest_loop``, the busiest one alone (1.0: that loop had no time to spare); ``others``,
    the workers' other threads (the batches' runs, ONNX Runtime's and gRPC's own threads). A thread that started
    between the readings counts whole; one that ended, not at all (its time can no longer be read)."""
    loops, others = [], 0.0
    for pid, threads in after.items():
        prior = before.get(pid, {})
        spent = {tid: seconds - prior.get(tid, 0.0) for tid, seconds in threads.items()}
        loops.append(spent.pop(pid, 0.0) / elapsed)
        others += sum(spent.values()) / elapsed
    return {"loops": sum(loops), "busiest_loop": max(loops, default=0.0), "others": others}


class WorkerSampler:
    """Reads the workers' threads every ``every`` seconds while a load runs, for the cores over a window learned
    only afterwards (the Python load generator starts its clients seconds after it is called)."""

    def __init__(self, workers: list[psutil.Process], every: float = 0.2):
        self.workers, self.every = workers, every
        self.readings: list[tuple[float, float, dict[int, dict[int, float]]]] = []  # wall clock, monotonic, threads
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while True:
            self.readings.append((time.time(), time.monotonic(), worker_threads(self.workers)))
            if self.stop.wait(self.every):
                return

    def __enter__(self) -> WorkerSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def cores(self, start: float, end: float) -> dict | None:
        """``worker_cores`` between the first reading at or after ``start`` (wall-clock seconds) and the last at
        or before ``end``; None when no two readings fall inside."""
        inside = [(since, threads) for at, since, threads in self.readings if start <= at <= end]
        if len(inside) < 2:
            return None
        (first_at, first), (last_at, last) = inside[0], inside[-1]
        return worker_cores(first, last, last_at - first_at)


def split(workers: list[psutil.Process], server_pids: set[int], window: float) -> dict:
    """CPU seconds per second over ``window``: the workers' event loops, their other threads, and the load."""
    threads_before = worker_threads(workers)
    load = clients(server_pids)
    load_before = {p.pid: process_seconds(p) for p in load}
    began = time.perf_counter()
    time.sleep(window)
    elapsed = time.perf_counter() - began
    cores = worker_cores(threads_before, worker_threads(workers), elapsed)
    client = sum(process_seconds(p) - load_before[p.pid] for p in load)
    return {"loops": cores["loops"], "others": cores["others"], "client": client / elapsed}


def budget_row(server, model, protocol: str, concurrency: int, seconds: float) -> dict:
    """One protocol under load; every share in milliseconds of one core per request (one image each)."""
    workers, server_pids = server_workers(server)
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
