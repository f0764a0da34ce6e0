"""Soak test: hours of service compressed into minutes, with a verdict.

    python -m loadtests.soak --url http://127.0.0.1:3000 --model resnet18-digits --minutes 10

First it measures capacity (closed loop, ``--clients`` concurrent clients, 15 s),
then offers ``--load`` (default 70%) of it as an open-loop stream of
``POST /predict`` requests for ``--minutes``, sampling the server's resident
memory (every worker, found from the process listening on the port) every
10 s. It prints a line a minute and fails (exit 1) when any request fails, when
memory grows more than ``--max-growth`` after the first minute, or when the
last minute's p99 exceeds ``--max-p99-drift`` times the second minute's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlparse

import aiohttp
import numpy as np
import psutil

from .digit_images import digit_files

SAMPLE_SECONDS = 10
MAX_IN_FLIGHT = 256  # connections; beyond it requests wait in the client, which the report shows as latency


def server_processes(port: int) -> list[psutil.Process]:
    """The process tree of whatever listens on ``port`` (BentoML's arbiter and its workers)."""
    for connection in psutil.net_connections(kind="tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
            if connection.pid:
                root = psutil.Process(connection.pid)
                while root.parent() and "bentoml" in " ".join(root.parent().cmdline()):
                    root = root.parent()
                return [root, *root.children(recursive=True)]
    raise SystemExit(f"no process listens on port {port}")


def resident_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


async def predict(session: aiohttp.ClientSession, model: str, image: bytes) -> tuple[int, str]:
    form = aiohttp.FormData()
    form.add_field("image", image, filename="d.png", content_type="image/png")
    form.add_field("model", model)
    async with session.post("/predict", data=form) as response:
        return response.status, await response.text()


async def capacity(session: aiohttp.ClientSession, model: str, files: list[bytes], clients: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def loop(index: int):
        nonlocal done
        while time.perf_counter() < stop_at:
            status, text = await predict(session, model, files[index % len(files)])
            if status != 200:
                raise SystemExit(f"capacity run failed: {status} {text}")
            done += 1
            index += 1

    began = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(clients)))
    return done / (time.perf_counter() - began)


async def soak(args) -> int:
    files = [f.data for f in digit_files(3 if "lenet" not in args.model else 1, 64 if "lenet" not in args.model else 32,
                                         count=32, seed=12)]
    processes = server_processes(urlparse(args.url).port or 80)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(args.url, connector=connector, timeout=timeout) as session:
        measured = await capacity(session, args.model, files, args.clients, 15)
        rate = measured * args.load
        print(f"capacity {measured:.0f} req/s with {args.clients} clients; offering {rate:.0f} req/s "
              f"({args.load:.0%}) for {args.minutes} min", flush=True)
        latencies: list[list[float]] = [[] for _ in range(int(args.minutes) + 1)]
        failures: list[str] = []
        memory: list[tuple[float, float]] = []
        pending: set[asyncio.Task] = set()
        began = time.perf_counter()
        end = began + args.minutes * 60

        async def one(index: int):
            sent = time.perf_counter()
            try:
                status, text = await predict(session, args.model, files[index % len(files)])
                if status != 200:
                    failures.append(f"{status} {text[:100]}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                failures.append(type(exc).__name__)
            latencies[int((sent - began) // 60)].append(time.perf_counter() - sent)

        index, next_sample, minute = 0, began, 0
        while (now := time.perf_counter()) < end:
            due = began + index / rate
            if now >= next_sample:
                memory.append((now - began, resident_mb(processes)))
                next_sample += SAMPLE_SECONDS
            if int((now - began) // 60) > minute:
                report(minute, latencies[minute], memory, failures)
                minute += 1
            if now < due:
                await asyncio.sleep(min(due - now, 0.01))
                continue
            task = asyncio.create_task(one(index))
            pending.add(task)
            task.add_done_callback(pending.discard)
            index += 1
        await asyncio.gather(*pending)
        report(minute, latencies[minute], memory, failures)
        memory.append((time.perf_counter() - began, resident_mb(processes)))
    return verdict(args, latencies, memory, failures, index)


def report(minute: int, latencies: list[float], memory, failures) -> None:
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    print(f"minute {minute + 1}: {len(latencies)} requests, p50 {np.percentile(ms, 50):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, memory {memory[-1][1]:.0f} MB, failures so far {len(failures)}",
          flush=True)


def verdict(args, latencies, memory, failures, sent: int) -> int:
    after_warmup = [mb for t, mb in memory if t >= 60] or [memory[-1][1]]
    growth = (memory[-1][1] - after_warmup[0]) / after_warmup[0]
    full_minutes = [m for m in latencies if m]
    p99s = [float(np.percentile(np.array(m) * 1000, 99)) for m in full_minutes]
    reference = p99s[1] if len(p99s) > 2 else p99s[0]
    drift = p99s[-2] / reference if len(p99s) > 2 else 1.0  # the last minute is partial
    print(f"\nsent {sent}, failed {len(failures)}; memory {after_warmup[0]:.0f} -> {memory[-1][1]:.0f} MB "
          f"({growth:+.1%} after the first minute); p99 {reference:.1f} -> {p99s[-2] if len(p99s) > 2 else reference:.1f} ms "
          f"(x{drift:.2f})")
    problems = []
    if failures:
        problems.append(f"{len(failures)} failed requests, e.g. {failures[:3]}")
    if growth > args.max_growth:
        problems.append(f"memory grew {growth:.1%} (limit {args.max_growth:.0%})")
    if drift > args.max_p99_drift:
        problems.append(f"p99 drifted x{drift:.2f} (limit x{args.max_p99_drift})")
    print("FAIL: " + "; ".join(problems) if problems else "PASS")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--model", default="resnet18-digits")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of measured capacity to offer")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients when measuring capacity")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--max-p99-drift", type=float, default=1.5)
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
