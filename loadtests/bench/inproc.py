"""CPU per request of the prediction routes without sockets: where the server's own time goes.

The fast lane (``cnnserve/serving/fastlane.py``) is driven by ASGI messages in this
process, over the real inference core, batcher and ONNX Runtime session (one
thread), with prometheus-client in multiprocess mode as in a worker. No HTTP
server, kernel or client shares the figures, so they are steady enough to
compare code changes (the minimum over rounds is reported), and ``--profile``
prints cProfile's heaviest functions for one route.

    python -m loadtests.bench.inproc --model lenet5-digits --clients 32
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import cProfile
import os
import pstats
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from .served import ROUTES, route_loads

REPO_ROOT = Path(__file__).resolve().parents[2]


def build_lane(models_dir: Path, model_name: str):
    """The fast lane over one model's core and host, built as a worker builds them (one ONNX Runtime thread,
    no borrowed cores), with the no-op routes; and the model."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="cnnserve-inproc-"))
    from cnnserve.serving.auth import KeyCheck
    from cnnserve.serving.config import load_settings
    from cnnserve.serving.core import InferenceCore
    from cnnserve.serving.fastlane import ROUTES, FastLane
    from cnnserve.serving.host import ModelHost
    from cnnserve.serving.repository import discover
    from cnnserve.serving.routes import build_rest_app, serve_core

    from .noop_routes import register

    settings = replace(load_settings({}, Path(os.devnull)), models_dir=models_dir, serve=(model_name,), workers=1,
                       threads=1, borrow_idle_cores=False)
    repository = discover(settings.models_dir, settings.serve)
    app = build_rest_app()
    serve_core(app, InferenceCore(settings, repository, ModelHost(settings, repository)))
    routes = copy.deepcopy(ROUTES)
    register(routes)
    return FastLane(None, app, settings.max_body_bytes, KeyCheck([]), (), routes=routes), repository.resolve(model_name)


def requests_for(model) -> dict[str, tuple[str, str, list[tuple[bytes, bytes]], bytes]]:
    """Per route: path, query string, headers and body of one request (the first of what wrk would send)."""
    requests = {}
    for route, load in route_loads(model).items():
        path, _, query = load.path.partition("?")
        headers = [(b"content-type", load.content_type.encode()),
                   *((k.lower().encode(), v.encode()) for k, v in (load.headers or {}).items())]
        requests[route] = (path, query, headers, load.bodies[0])
    return requests


async def cpu_per_request(lane, request, clients: int, seconds: float) -> float:
    """Microseconds of this process's CPU per request, ``clients`` requests always in flight."""
    path, query, headers, body = request
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    done = 0
    stop = time.perf_counter() + seconds

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def client():
        nonlocal done
        while time.perf_counter() < stop:
            sent = []

            async def send(message, sent=sent):
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": path, "query_string": query.encode(),
                     "headers": headers, "http_version": "1.1", "scheme": "http", "root_path": "",
                     "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
            await lane(scope, receive, send)
            if sent[0]["status"] != 200:
                raise RuntimeError(f"{path} answered {sent[0]['status']}: {sent[1].get('body', b'')[:300]!r}")
            done += 1

    began = time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    return 1e6 * (time.process_time() - began) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--model", default="lenet5-digits")
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES))
    parser.add_argument("--clients", type=int, default=32, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=0.5, help="per route and round")
    parser.add_argument("--rounds", type=int, default=5, help="routes interleaved; the minimum is reported")
    parser.add_argument("--profile", choices=ROUTES, help="cProfile one route after")
    args = parser.parse_args()

    lane, model = build_lane(args.models_dir, args.model)
    requests = requests_for(model)

    async def measure() -> tuple[dict[str, float], cProfile.Profile | None]:
        best = {route: float("inf") for route in args.routes}
        for _ in range(args.rounds):
            for route in args.routes:
                best[route] = min(best[route], await cpu_per_request(lane, requests[route], args.clients, args.seconds))
        if not args.profile:
            return best, None
        profile = cProfile.Profile()  # in the same event loop: the batcher belongs to it
        profile.enable()
        await cpu_per_request(lane, requests[args.profile], args.clients, args.seconds)
        profile.disable()
        return best, profile

    best, profile = asyncio.run(measure())
    print(f"{model.key}, {args.clients} requests in flight, min of {args.rounds} rounds:")
    for route, micros in best.items():
        print(f"  {route:<10} {micros:8.1f} µs of CPU per request")
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
