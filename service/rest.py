"""Plain HTTP routes mounted beside BentoML's API: the model listing.

Thin: each handler asks the inference core and encodes its answer as JSON.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .config import Settings
from .errors import ServiceError
from .repository import ModelVersion, Repository


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


def build_rest_app() -> Starlette:
    """The app reads the inference core from ``app.state.core``, set by the gateway at start."""

    async def list_models(request: Request) -> JSONResponse:
        core = request.app.state.core
        statuses = await core.runtime_status()
        return JSONResponse(model_listing(core.repository, statuses, core.settings))

    return Starlette(routes=[Route("/models", list_models, methods=["GET"])])
