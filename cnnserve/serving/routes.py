"""The HTTP routes, mounted in the BentoML gateway service: ``/predict``,
``/predict_batch``, ``/models``, the V2 REST routes, and the lifespan that runs
the gRPC server.

Thin: each handler parses its request, hands it to the inference core's one
entry point (``InferenceCore.infer``) and encodes the answer as JSON. The prediction routes parse multipart themselves rather than
through BentoML's ``@bentoml.api``: BentoML 1.4's multipart parser downloads a
file field sent as text as if it were a URL (a server-side request forgery
risk) and answers 500 to binary data in an unexpected field.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .config import Settings
from .core import InferenceCore
from .errors import InvalidInput, ServiceError
from .http_common import error_response, read_body, timeout_ms
from .lifecycle import RepositoryPoller
from .multipart import parse_form
from .openapi import openapi_document
from .postprocess import describe
from .repository import ModelVersion, Repository
from .shutdown import stop_listening_on_sigterm
from .v2.dataplane import DataPlane
from .v2.grpc_server import GrpcServer
from .v2.rest import v2_routes


def describe_version(model: ModelVersion, status: dict, settings: Settings) -> dict:
    card = model.card
    batching = settings.batching_for(model.name)
    return {
        "version": model.version,
        "status": status["status"],
        "reason": status["reason"],
        "provider": status.get("provider"),
        "precision": status.get("variant"),
        "precision_choice": status.get("precision_choice"),
        "input": card["input"],
        "outputs": [o["name"] for o in card["outputs"]],
        "labels": model.labels,
        "metrics": card.get("metrics"),
        "trained": card.get("trained", True),
        "batching": {
            "enabled": settings.batching,
            "max_batch_size": batching.max_batch_size,
            "max_queue_delay_ms": batching.max_queue_delay_ms,
            "max_queue_images": batching.max_queue_images,
        },
    }


def model_listing(repository: Repository, statuses: dict, settings: Settings) -> dict:
    models = [
        {
            "name": name,
            "default_version": max(versions),
            "version_policy": settings.version_policy_for(name).text,
            "versions": [describe_version(mv, statuses[mv.key], settings) for mv in versions.values()],
        }
        for name, versions in repository.models.items()
    ]
    failures = [{"model": key, "status": "failed", "reason": reason} for key, reason in repository.failures.items()]
    return {"default_model": repository.default_model(), "models": models, "failed": failures}


PREDICT_OPTIONS = {"model", "version", "top_k"}


def integer_field(form, name: str) -> int | None:
    value = form.get(name)
    if value in (None, ""):
        return None
    problem = InvalidInput(f"{name} must be an integer, got {value!r}")
    if not value.isascii():
        raise problem
    try:
        return int(value)
    except ValueError:
        raise problem from None


async def read_files(request: Request, field: str, max_files: int) -> tuple[list[bytes], dict]:
    """The uploaded files of one multipart field, and the text options beside them.

    A text value where a file belongs is refused: it is never taken for a URL to
    fetch, which BentoML's own multipart parser would do.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidInput(f"send the image(s) as multipart/form-data field {field!r}")
    form = parse_form(await read_body(request), content_type, {field, *PREDICT_OPTIONS}, max_files)
    if field in form.texts:
        raise InvalidInput(f"field {field!r} must be an uploaded file, not text")
    files = form.files.get(field)
    if not files:
        raise InvalidInput(f"missing multipart file field {field!r}")
    options_sent_as_files = PREDICT_OPTIONS & set(form.files)
    if options_sent_as_files:
        raise InvalidInput(f"{', '.join(sorted(options_sent_as_files))} must be text, not a file")
    return files, form.texts


PROTOCOL = "rest"  # the protocol label /predict and /predict_batch are counted under


async def predict_route(request: Request, field: str) -> dict:
    core = request.app.state.core
    limit = 1 if field == "image" else core.settings.max_images_per_request
    files, options = await read_files(request, field, limit)
    name = request.query_params.get("model") or options.get("model") or None
    merged = {**options, **{k: v for k, v in request.query_params.items() if k in ("version", "top_k")}}
    top_k = integer_field(merged, "top_k")

    def read(model: ModelVersion) -> list[bytes]:
        core.check_top_k(model, top_k)  # refused before any decoding
        return files

    began = time.perf_counter()
    result = await core.infer(PROTOCOL, name, integer_field(merged, "version"), timeout_ms(request.scope), read)
    model = result.model
    top_k = core.check_top_k(model, top_k)
    predictions = [
        describe(result.probabilities[i], None if result.boxes is None else result.boxes[i], model.labels, top_k,
                 result.placements[i].source)
        for i in range(len(files))
    ]
    timings = {**result.timings, "total_ms": round((time.perf_counter() - began) * 1000, 3)}
    return {"model": model.name, "version": model.version, "predictions": predictions, "timings": timings}


async def predict(request: Request) -> JSONResponse:
    """One image (multipart field ``image``): label, top-k, box in the image's pixels."""
    try:
        answer = await predict_route(request, "image")
    except ServiceError as exc:
        return error_response(exc)
    return JSONResponse(
        {"model": answer["model"], "version": answer["version"], **answer["predictions"][0], "timings": answer["timings"]}
    )


async def predict_batch(request: Request) -> JSONResponse:
    """Several images (repeated multipart field ``images``), one answer each, in order."""
    try:
        return JSONResponse(await predict_route(request, "images"))
    except ServiceError as exc:
        return error_response(exc)


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document())


async def list_models(request: Request) -> JSONResponse:
    core = request.app.state.core
    statuses = core.host.status
    return JSONResponse(model_listing(core.repository, statuses, core.settings))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    """Run the gRPC server (and, in poll mode, the repository poller) for as long as this worker lives; refuse
    connections from SIGTERM on."""
    stop_listening_on_sigterm()
    settings = app.state.core.settings
    poller = None
    if settings.model_control_mode != "none":
        poller = asyncio.create_task(RepositoryPoller(settings, app.state.core).run(), name="repository poller")
    server = GrpcServer(app.state.dataplane, settings) if settings.grpc_enabled else None
    if server:
        await server.start()
    try:
        yield
    finally:
        if server:
            await server.stop()
        if poller:
            poller.cancel()


def serve_core(app: Starlette, core: InferenceCore) -> None:
    """Hand the routes their inference core and V2 data plane (before the app's lifespan starts gRPC)."""
    app.state.core = core
    app.state.dataplane = DataPlane(core)


def build_rest_app() -> Starlette:
    """Routes beside BentoML's: the model listing and the V2 REST protocol.

    ``serve_core`` gives it the inference core once the worker has loaded its models.
    """
    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/predict_batch", predict_batch, methods=["POST"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *v2_routes(),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
