"""Closed-loop HTTP load from Python, for hosts without wrk or perf_analyzer (a lent GPU machine has neither).

``concurrency`` connections, each sending its next request when the answer to the last arrives, spread over
processes of at most ``PER_PROCESS`` connections (one Python event loop sends about 3,000 small requests a
second, so one process alone would measure itself, not the server). Every process starts at the same instant (or,
if its imports ran late, when it is ready) and stops ``seconds`` after that instant; requests still in flight then
are not counted, and each process's rate is over its own window. Same figures as ``wrk.wrk``.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .wrk import HttpLoad

PER_PROCESS = 32
START_DELAY_S = 5.0  # time for the spawned processes to import and connect before the common start


def http_load(url: str, load: HttpLoad, concurrency: int, seconds: float, max_processes: int = 8) -> dict:
    processes = min(max_processes, math.ceil(concurrency / PER_PROCESS))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    start_at = time.time() + START_DELAY_S
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_one_process, [(url, load, share, start_at, seconds) for share in shares]))
    latencies = np.concatenate([p["latencies"] for p in parts]) if parts else np.zeros(0)
    statuses: dict[int, int] = {}
    for part in parts:
        for status, count in part["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    errors = sum(count for status, count in statuses.items() if status != 200)
    requests = sum(len(p["latencies"]) for p in parts)
    return {
        # the load's own CPU per answered request, over the measured window (not its processes' start-up)
        "client_cpu_ms_per_request": 1000 * sum(p["cpu_s"] for p in parts) / requests if requests else None,
        "throughput_rps": sum(len(p["latencies"]) / p["window_s"] for p in parts),
        "p50_ms": float(np.percentile(latencies, 50)) * 1000 if len(latencies) else None,
        "p99_ms": float(np.percentile(latencies, 99)) * 1000 if len(latencies) else None,
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "window": [start_at, start_at + seconds],  # wall-clock seconds of the load
    }


def _one_process(task) -> dict:
    return asyncio.run(_connections(*task))


async def _connections(url: str, load: HttpLoad, connections: int, start_at: float, seconds: float) -> dict:
    import aiohttp

    headers = {"Content-Type": load.content_type, **(load.headers or {})}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = start_at + seconds

    async def connection(session: aiohttp.ClientSession, offset: int) -> None:
        sent = offset
        while True:
            began = time.time()
            if began >= stop_at:
                return
            try:
                async with session.request(load.method, url + load.path, data=load.bodies[sent % len(load.bodies)],
                                           headers=headers) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError:
                status = 0  # connection refused or reset: an error of its own kind
            ended = time.time()
            sent += 1
            if ended <= stop_at:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(ended - began)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        began, cpu_began = time.time(), time.process_time()
        await asyncio.gather(*(connection(session, i) for i in range(connections)))
    return {"latencies": np.asarray(latencies), "statuses": statuses, "window_s": max(1e-3, stop_at - began),
            "cpu_s": time.process_time() - cpu_began}
