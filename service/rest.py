"""The Starlette app mounted beside BentoML's API: the model listing, the V2
REST routes, and the lifespan that runs the gRPC server.

Thin: each handler asks the inference core and encodes its answer as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .config import Settings
from .errors import ServiceError
from .repository import ModelVersion, Repository
from .v2.grpc_server import GrpcServer
from .v2.rest import v2_routes


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers())


def describe_version(model: ModelVersion, status: dict | None, settings: Settings) -> dict:
    card = model.card
    batching = settings.batching_for(model.name)
    return {
        "version": model.version,
        "status": status["status"] if status else "loading",
        "reason": status.get("reason") if status else None,
        "provider": status.get("provider") if status else None,
        "precision": status.get("variant") if status else None,
        "input": card["input"],
        "outputs": [o["name"] for o in card["outputs"]],
        "labels": model.labels,
        "metrics": card.get("metrics"),
        "trained": card.get("trained", True),
        "batching": {
            "enabled": settings.batching,
            "max_batch_size": batching.max_batch_size,
            "max_latency_ms": batching.max_latency_ms,
        },
    }


def model_listing(repository: Repository, statuses: dict, settings: Settings) -> dict:
    models = [
        {
            "name": name,
            "default_version": max(versions),
            "versions": [describe_version(mv, statuses.get(mv.key), settings) for mv in versions.values()],
        }
        for name, versions in repository.models.items()
    ]
    failures = [{"model": key, "status": "failed", "reason": reason} for key, reason in repository.failures.items()]
    return {"default_model": repository.default_model(), "models": models, "failed": failures}


async def list_models(request: Request) -> JSONResponse:
    core = request.app.state.core
    statuses = await core.runtime_status()
    return JSONResponse(model_listing(core.repository, statuses, core.settings))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    """Run the gRPC server for as long as this gateway worker lives."""
    settings = app.state.core.settings
    if not settings.grpc_enabled:
        yield
        return
    server = GrpcServer(app.state.dataplane, settings)
    await server.start()
    readiness = asyncio.create_task(server.serve_when_ready())
    try:
        yield
    finally:
        readiness.cancel()
        await server.stop()


def build_rest_app() -> Starlette:
    """Routes beside BentoML's: the model listing and the V2 REST protocol.

    The gateway puts the inference core and the V2 data plane in ``app.state``
    when it starts, before this app's lifespan (the gRPC server) begins.
    """
    return Starlette(routes=[Route("/models", list_models, methods=["GET"]), *v2_routes()], lifespan=lifespan)
