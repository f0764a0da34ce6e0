"""What handing a batch to the worker that owns the device's batches costs (``shared_batches``), without a model.

    python -m loadtests.bench.handover --seconds 3

The owner (``BatchOwner`` on an event loop in its own process, answering every batch with zeros of a 10-class
model's outputs at once) and a forwarding worker (``Forwarder``, one batch in flight, as a worker's executor thread
sends them) exchange batches of ResNet-18's input at 64 pixels and ResNet-50's at 224, of several sizes. Printed
per size: hand-overs a second, the round trip, and each end's CPU per hand-over, which is what a GPU's owner
spends on top of its own requests, and a forwarding worker instead of running the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from cnnserve.serving.shared_batches import BatchOwner, Forwarder, runs_as, socket_path

HOW = runs_as("fp32", "CUDAExecutionProvider")
INPUTS = {"resnet18 at 64": (3, 64, 64), "resnet50 at 224": (3, 224, 224)}
SIZES = (1, 16, 64)


async def zeros(key: str, how: str, images: np.ndarray):
    return np.zeros((len(images), 10), np.float32), np.zeros((len(images), 4), np.float32)


def owner(path: Path, ready) -> None:
    async def serve() -> None:
        BatchOwner(path, zeros, asyncio.get_running_loop())
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


def measure(seconds: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = socket_path(Path(folder), 0)
        ready = multiprocessing.Event()
        process = multiprocessing.Process(target=owner, args=(path, ready), daemon=True)
        process.start()
        ready.wait(30)
        owner_process, forwarder = psutil.Process(process.pid), Forwarder(path)
        try:
            for name, shape in INPUTS.items():
                for size in SIZES:
                    batch = np.random.default_rng(0).random((size, *shape), dtype=np.float32)
                    forwarder.forward("m/1", HOW, batch)  # connected, warm
                    owner_before, own_before = owner_process.cpu_times(), time.process_time()
                    began, count = time.perf_counter(), 0
                    while time.perf_counter() - began < seconds:
                        assert forwarder.forward("m/1", HOW, batch) is not None
                        count += 1
                    elapsed = time.perf_counter() - began
                    owner_after = owner_process.cpu_times()
                    owner_cpu = owner_after.user + owner_after.system - owner_before.user - owner_before.system
                    rows.append({"input": name, "batch": size, "mb": batch.nbytes / 1e6, "per_s": count / elapsed,
                                 "round_trip_ms": 1000 * elapsed / count, "owner_cpu_ms": 1000 * owner_cpu / count,
                                 "forwarder_cpu_ms": 1000 * (time.process_time() - own_before) / count})
        finally:
            forwarder.close()
            process.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per row")
    args = parser.parse_args()
    print("| input | batch | MB | hand-overs/s | round trip ms | owner CPU ms | forwarding worker CPU ms |")
    print("|---|---|---|---|---|---|---|")
    for r in measure(args.seconds):
        print(f"| {r['input']} | {r['batch']} | {r['mb']:.2f} | {r['per_s']:.0f} | {r['round_trip_ms']:.3f} | "
              f"{r['owner_cpu_ms']:.3f} | {r['forwarder_cpu_ms']:.3f} |")


if __name__ == "__main__":
    main()
