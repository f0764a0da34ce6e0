"""The BentoML service: every worker process is a complete cnnserve.

Each worker builds its model host (``host.py``: ONNX Runtime sessions loaded and
warmed, one adaptive batcher per model version), serves the HTTP routes of
``routes.py`` (mounted in the service) and a gRPC server on the same event loop, so requests from every protocol for one model share its batches.
BentoML runs the workers (``workers × threads ≤ cores`` by default), restarts
one that dies, merges their metrics at ``/metrics`` and answers ``/livez`` and
``/readyz``. Why not BentoML's own batchable API behind ``bentoml.depends``:
see docs/architecture.md (measured: a 5 ms hop per request and small batches).

Start it with ``bentoml serve cnnserve.serving.app:CnnServe``.
"""

from __future__ import annotations

import gc
import logging

import bentoml

from ..machine import describe_cores
from .auth import ApiKeyMiddleware
from .auth import key_check as make_key_check
from .body_limit import BodyLimit
from .config import load_settings
from .control import remove_when_the_server_stops
from .core import InferenceCore, ready
from .fastlane import FastLane
from .host import ModelHost
from .lifecycle import initial_repository
from .page import PAGE_PATHS
from .patches import allowed
from .patches.bentoml_asgi import promised_middlewares, wrap_service_app
from .patches.circus_sockets import listen_on_own_socket, spread_connections
from .patches.uvicorn_headers import bound_header_time
from .patches.uvicorn_writes import coalesce_responses
from .routes import build_rest_app, route_error, serve_core
from .runtime import usable_gpus
from .shutdown import listening_alone

log = logging.getLogger("cnnserve")


def configure_logging() -> None:
    """Our INFO lines (chosen provider, warm-up, refused models) beside BentoML's."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] [%(name)s:%(process)d] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


configure_logging()
settings = load_settings()
GPUS = usable_gpus(settings.providers)
WORKERS = settings.inference_workers(gpus=GPUS)
if bentoml.server_context.worker_index is None:  # once, in the process that starts the workers
    log.info("%d worker(s) of %d ONNX Runtime thread(s), for %s%s", WORKERS, settings.session_threads(gpus=GPUS),
             describe_cores(), f" and {GPUS} GPU(s)" if GPUS else "")
    remove_when_the_server_stops(settings.models_dir)
if settings.spread_connections and allowed("circus") and allowed("bentoml"):
    spread_connections()  # takes effect in the arbiter, which imports this before it binds the HTTP port
repository = initial_repository(settings)
rest_app = build_rest_app()


@bentoml.asgi_app(rest_app, path="/")
@bentoml.service(
    name="cnnserve",
    workers=WORKERS,
    traffic={"timeout": 60},
    logging={"access": {"enabled": settings.access_log}},
)
class CnnServe:
    def __init__(self):
        self.host = ModelHost(settings, repository, (bentoml.server_context.worker_index or 1) - 1)
        serve_core(rest_app, InferenceCore(settings, repository, self.host))
        # What exists now lives as long as the worker (modules, models, BentoML's app): out of the collector's
        # sight, the collections that requests' garbage triggers stop walking it. They took 4% of the machine's
        # CPU under LeNet-5 load (perf); frozen, LeNet-5 V2 REST gained 2.6% and ResNet-18 2.4% (alternated
        # passes, 64 clients, 2026-11-27).
        gc.freeze()

    async def __is_ready__(self) -> bool:
        """Async, so BentoML asks it on the event loop, where the lifecycle changes the repository and the status
        (a plain method ran on a worker thread while the loop could change the dicts it walks)."""
        return ready(self.host.status, repository)


key_check = make_key_check(settings)
CnnServe.add_asgi_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
open_paths = settings.auth_open_paths + PAGE_PATHS  # the page's files hold no secret and ask for the key
CnnServe.add_asgi_middleware(ApiKeyMiddleware, check=key_check, open_paths=open_paths)


def worker_app(app):
    """What each worker's uvicorn serves: BentoML's app with the fast lane in front (fastlane.py), on the
    worker's own listening socket (patches/circus_sockets.py), each response in one write
    (patches/uvicorn_writes.py), each request's headers within header_timeout_s (patches/uvicorn_headers.py)."""
    app.add_exception_handler(404, route_error)  # JSON naming the path, not BentoML's plain "Not Found"
    if settings.spread_connections and listen_on_own_socket():
        listening_alone()
    if settings.coalesce_writes:
        coalesce_responses(settings.header_timeout_s)
    else:
        bound_header_time(settings.header_timeout_s)
        log.info("coalesce_writes is off: lone requests queue like the rest (lone_request.py reads uvicorn's request "
                 "tasks through the coalescing protocol)")
    if not settings.fast_lane:
        return app
    return FastLane(app, rest_app, settings.max_body_bytes, key_check, open_paths,
                    around=promised_middlewares())


wrap_service_app(CnnServe, worker_app)
