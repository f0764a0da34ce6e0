"""Latency and throughput of ``POST /predict`` against a running service.

    python -m loadtests.predict_bench --url http://127.0.0.1:3000 \\
        --model resnet18-digits --concurrency 1 32 --requests 400

Each concurrency level sends a bounded number of requests from that many
concurrent clients (after a short warm-up) and prints p50/p99 latency,
throughput, the error count and the mean batch size the service formed
(from its own metrics). ``--json`` writes the rows for later tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np

from .digit_images import digit_files
from .soak import predict


def metric_total(metrics: str, name: str, **labels) -> float:
    """The sum of ``name``'s samples in a /metrics page whose labels include ``labels``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()))


def batch_totals(metrics: str, model: str, family: str = "cnnserve_batch_size_images") -> tuple[float, float]:
    """Sum and count of one of ``model``'s histograms in a /metrics page: images and batches by default."""
    return metric_total(metrics, f"{family}_sum", model=model), metric_total(metrics, f"{family}_count", model=model)


async def run_level(url: str, model: str, files: list[tuple[bytes, int]], concurrency: int, requests: int) -> dict:
    latencies: list[float] = []
    errors = 0
    wrong = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one_client():
            nonlocal next_index, errors, wrong
            while next_index < requests:
                data, label = files[next_index % len(files)]
                next_index += 1
                began = time.perf_counter()
                status, text = await predict(session, model, data)
                latencies.append(time.perf_counter() - began)
                if status != 200:
                    errors += 1
                elif json.loads(text)["label"] != str(label):
                    wrong += 1

        before = batch_totals(await metrics(session), model)
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = batch_totals(await metrics(session), model)
    images, batches = after[0] - before[0], after[1] - before[1]
    ms = np.array(latencies) * 1000
    return {
        "model": model,
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "accuracy": round(1 - wrong / max(1, len(latencies) - errors), 4),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_batch": round(images / batches, 2) if batches else None,
    }


async def metrics(session: aiohttp.ClientSession) -> str:
    async with session.get("/metrics") as response:
        return await response.text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--channels", type=int, default=None, help="default: from GET /models")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=400, help="per concurrency level")
    parser.add_argument("--label", default="", help="a tag for the rows, e.g. batching-on")
    parser.add_argument("--json", type=Path, help="append rows to this JSON-lines file")
    args = parser.parse_args()

    listing = httpx.get(f"{args.url}/models", timeout=30).json()
    spec = next(v for m in listing["models"] if m["name"] == args.model for v in m["versions"])["input"]
    files = [(f.data, f.label) for f in digit_files(spec["channels"], spec["shape"][-1], count=64, seed=1)]
    asyncio.run(run_level(args.url, args.model, files, 4, 40))  # warm-up
    print(f"{'label':<14}{'model':<18}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'acc':>7}{'batch':>7}")
    for concurrency in args.concurrency:
        row = asyncio.run(run_level(args.url, args.model, files, concurrency, args.requests))
        row["label"] = args.label
        print(
            f"{args.label:<14}{row['model']:<18}{concurrency:>5}{row['throughput_rps']:>9}{row['p50_ms']:>9}"
            f"{row['p99_ms']:>9}{row['errors']:>8}{row['accuracy']:>7}{row['mean_batch'] or '-':>7}"
        )
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
