"""An experiment record: N V2 binary requests at once (one random 224-pixel image each) to the untrained ResNet-50
of `python -m cnnserve.training bench-models --archs resnet50 --out BENCH`, two rounds, statuses and client times.

    PYTHONPATH=. .venv/bin/python loadtests/results/2026-11-27/deadline-admission/flood.py BENCH 200 3000

Run from the checkout to measure (the rows in README.md alternated 306e099's code, before the change, and 99409a2's).
"""
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from loadtests.local_server import running_server
from loadtests.scenarios.v2_wire import binary_request

BENCH, N, TIMEOUT_MS = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
MODEL = "resnet50-imagenet-untrained"


async def flood(url: str) -> list[tuple[int, float]]:
    rng = np.random.default_rng(0)
    bodies = [binary_request(rng.random((1, 3, 224, 224), dtype=np.float32)) for _ in range(32)]
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=N)) as client:
        async def one(i: int) -> tuple[int, float]:
            body, length = bodies[i % 32]
            began = time.perf_counter()
            response = await client.post(f"/v2/models/{MODEL}/infer", content=body,
                                         headers={"Inference-Header-Content-Length": str(length)})
            return response.status_code, time.perf_counter() - began
        return await asyncio.gather(*(one(i) for i in range(N)))


with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), request_timeout_ms=TIMEOUT_MS, models_dir=BENCH,
                                                          max_batch_size=8) as server:
    for round_ in range(2):
        answers = asyncio.run(flood(server.url))
        print(round_, json.dumps({code: (len(t := [s for c, s in answers if c == code]),
                                         f"median {1000 * np.median(t):.0f} ms, max {1000 * max(t):.0f} ms")
                                  for code in sorted({c for c, _ in answers})}))
