"""The HTTP routes, mounted in the BentoML gateway service: ``/predict``,
``/predict_batch``, ``/explain``, ``/models``, the V2 REST routes, the page at ``/``,
and the lifespan that runs the gRPC server.

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

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .annotate import annotated_png
from .config import Settings
from .core import InferenceCore, TensorResult
from .errors import InvalidInput, ServiceError, whole_number
from .explain import default_window, geometry, occluded, positions, sensitivity
from .http_common import BodyClock, error_response, read_body, timeout_ms
from .lifecycle import RepositoryPoller
from .multipart import parse_form
from .openapi import openapi_document
from .page import page_routes
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
        "device_id": status.get("device_id"),  # on a GPU: the answering worker's GPU
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
            "padded_to": status.get("batch_shapes"),  # on a GPU: the batch sizes ONNX Runtime runs (gpu_batch_shapes)
            "cuda_graphs": status.get("cuda_graphs", False),  # each padded size replays a CUDA graph (cuda_graphs)
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
    return None if value in (None, "") else whole_number(value, name)


async def read_files(request: Request, field: str, max_files: int,
                     options: frozenset[str] = frozenset()) -> tuple[list[bytes], dict]:
    """The uploaded files of one multipart field, and the text options beside them."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):  # media types are case-insensitive
        raise InvalidInput(f"send the image(s) as multipart/form-data field {field!r}")
    form = parse_form(await read_body(request), content_type, field, PREDICT_OPTIONS | options, max_files)
    files = form.files.get(field)
    if not files:
        raise InvalidInput(f"missing multipart file field {field!r}")
    return files, form.texts


PROTOCOL = "rest"  # the protocol label /predict and /predict_batch are counted under
EXPLAIN = "explain"  # and /explain


async def predict_route(request: Request, field: str) -> tuple[dict, list[bytes]]:
    core = request.app.state.core
    limit = 1 if field == "image" else core.settings.max_images_per_request
    with core.refusals(PROTOCOL):  # the form names the model: none is known yet
        files, options = await read_files(request, field, limit)
        name = request.query_params.get("model") or options.get("model") or None
        merged = {**options, **{k: v for k, v in request.query_params.items() if k in ("version", "top_k")}}
        top_k, version = integer_field(merged, "top_k"), integer_field(merged, "version")
        timeout = timeout_ms(request.scope)

    def read(model: ModelVersion) -> list[bytes]:
        core.check_top_k(model, top_k)  # refused before any decoding
        return files

    began = time.perf_counter()
    result = await core.infer(PROTOCOL, name, version, timeout, read)
    model = result.model
    top_k = core.check_top_k(model, top_k)
    predictions = [
        describe(result.probabilities[i], None if result.boxes is None else result.boxes[i], model.labels, top_k,
                 result.placements[i].source)
        for i in range(len(files))
    ]
    timings = {**result.timings, "total_ms": round((time.perf_counter() - began) * 1000, 3)}
    return {"model": model.name, "version": model.version, "predictions": predictions, "timings": timings}, files


async def predict(request: Request) -> JSONResponse:
    """One image (multipart field ``image``): label, top-k, box in the image's pixels; with ``Accept: image/png``,
    the image itself with its box and label drawn (annotate.py)."""
    try:
        answer, files = await predict_route(request, "image")
    except ServiceError as exc:
        return error_response(exc)
    if "image/png" in request.headers.get("accept", ""):
        png = await asyncio.to_thread(annotated_png, files[0], answer["predictions"][0])
        return Response(png, media_type="image/png")
    return JSONResponse(
        {"model": answer["model"], "version": answer["version"], **answer["predictions"][0], "timings": answer["timings"]}
    )


async def predict_batch(request: Request) -> JSONResponse:
    """Several images (repeated multipart field ``images``), one answer each, in order."""
    try:
        return JSONResponse((await predict_route(request, "images"))[0])
    except ServiceError as exc:
        return error_response(exc)


EXPLAIN_OPTIONS = frozenset({"window", "stride", "target"})


async def explain(request: Request) -> Response:
    """One image: the answer, and the occlusion map of its class (or of ``target``) in the image's pixels; with
    ``Accept: image/png``, the image with the map blended in and the answer drawn."""
    try:
        answer, data = await explain_route(request)
    except ServiceError as exc:
        return error_response(exc)
    if "image/png" in request.headers.get("accept", ""):
        png = await asyncio.to_thread(annotated_png, data, answer, answer["occlusion"])
        return Response(png, media_type="image/png")
    return JSONResponse(answer)


async def explain_route(request: Request) -> tuple[dict, bytes]:
    """The JSON answer and the image file it explains."""
    core = request.app.state.core
    with core.refusals(EXPLAIN):
        files, options = await read_files(request, "image", 1, EXPLAIN_OPTIONS)
        merged = {**options, **{k: v for k, v in request.query_params.items()
                                if k in {"version", "top_k", *EXPLAIN_OPTIONS}}}
        name = request.query_params.get("model") or options.get("model") or None
        version, timeout = integer_field(merged, "version"), timeout_ms(request.scope)
    plan: dict = {}

    def read(model: ModelVersion) -> list[bytes]:
        _, height, width = model.input_shape
        asked_window, asked_stride = integer_field(merged, "window"), integer_field(merged, "stride")
        window = default_window(min(height, width)) if asked_window is None else asked_window
        stride = window if asked_stride is None else asked_stride  # by default the window's own: tiles
        if not 1 <= window <= min(height, width) or not 1 <= stride <= window:  # wider strides leave pixels unseen
            raise InvalidInput(f"window must be 1 to {min(height, width)} pixels of {model.name}'s input and stride 1 "
                               f"to the window, got window {window} and stride {stride}")
        corners = positions(height, width, window, stride)
        if len(corners) > core.settings.max_explain_windows:
            raise InvalidInput(f"window {window} and stride {stride} make {len(corners)} occluded copies; the limit is "
                               f"{core.settings.max_explain_windows} (max_explain_windows): take a larger stride")
        room = core.settings.batching_for(model.name).max_queue_images
        if 1 + len(corners) > room:
            raise InvalidInput(f"window {window} and stride {stride} make {len(corners)} occluded copies; with the image "
                               f"they exceed {model.name}'s queue of {room} images (max_queue_images): take a larger "
                               "stride")
        core.host.check_room(model, 1 + len(corners))  # admitted like the images it will run: 503 when they don't fit
        target = merged.get("target")
        if target is not None and target not in model.labels:
            raise InvalidInput(f"target must be one of {model.name}'s labels ({', '.join(model.labels)}), got {target!r}")
        top_k = core.check_top_k(model, integer_field(merged, "top_k"))  # as /predict's (it was ignored)
        plan.update(window=window, stride=stride, corners=corners, target=target, top_k=top_k)
        return files

    async def compute(model: ModelVersion, images, deadline: float) -> TensorResult:
        if "occluded" in plan:  # the zoom-in pass's second look at a small digit: no map of its own
            return await core.run(model, images, deadline)
        copies = occluded(images[0], plan["corners"], plan["window"])
        result = await core.run(model, np.concatenate([images, copies]), deadline)
        plan["first"], plan["occluded"] = result.probabilities[0], result.probabilities[1:]
        return TensorResult(model, result.probabilities[:1], None if result.boxes is None else result.boxes[:1],
                            result.timings)

    began = time.perf_counter()
    result = await core.infer(EXPLAIN, name, version, timeout, read, compute)
    model, placement = result.model, result.placements[0]
    answer = describe(result.probabilities[0], None if result.boxes is None else result.boxes[0], model.labels,
                      plan["top_k"], placement.source)
    target = model.labels.index(plan["target"]) if plan["target"] is not None else answer["class_index"]
    _, height, width = model.input_shape
    occlusion = {
        "target": model.labels[target], "window": plan["window"], "stride": plan["stride"],
        "grid": sensitivity(float(plan["first"][target]), plan["occluded"][:, target], plan["corners"], plan["window"],
                            height, width, plan["stride"]),
        **geometry(placement, height, width, plan["stride"]),
    }
    timings = {**result.timings, "occluded_images": len(plan["corners"]),
               "total_ms": round((time.perf_counter() - began) * 1000, 3)}
    answer = {"model": model.name, "version": model.version, **answer, "occlusion": occlusion, "timings": timings}
    return answer, files[0]


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
    app.state.body_clock = BodyClock(core.settings.body_timeout_s)


def build_rest_app() -> Starlette:
    """Routes beside BentoML's: prediction, explanation, the model listing, the V2 REST protocol and the page at
    ``/`` (mounted ahead of BentoML's own index page, which it replaces).

    ``serve_core`` gives it the inference core once the worker has loaded its models.
    """
    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/predict_batch", predict_batch, methods=["POST"]),
        Route("/explain", explain, methods=["POST"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *page_routes(),
        *v2_routes(),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: route_error})


async def route_error(request: Request, exc: HTTPException) -> JSONResponse:
    """A route with another method (405, with ``Allow``) or a path no route has (404): JSON like every other error,
    not Starlette's plain text. A path none of these routes matches never reaches this app (BentoML mounts it
    passively), so the worker hands BentoML's app this handler for its 404s too (app.py)."""
    message, path, method = exc.detail, request.url.path[:200], request.method[:20]  # a client's, echoed: cut short
    if exc.status_code == 405:
        message = f"{method} is not allowed on {path}; allowed: {exc.headers.get('Allow')}"
    elif exc.status_code == 404 and message == "Not Found":  # the router's, not a handler's own 404
        message = f"no route {method} {path} on this server; GET /openapi.json lists them"
    return JSONResponse({"error": message, "code": exc.status_code}, status_code=exc.status_code, headers=exc.headers)
