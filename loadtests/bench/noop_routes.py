"""The benchmark's no-op routes: what the server itself costs per request.

- ``POST /noop`` reads the body and answers ``{}``: HTTP and the fast lane alone.
- ``POST /noop/v2/models/{name}[/versions/{v}]/infer`` is the V2 REST route as
  served (parsing, validation, admission, metrics, response encoding), with the
  model's outputs replaced by zeros of their shapes: no batcher, no ONNX Runtime.
  It is Triton's zero-compute model for this server: the same protocol, minus inference.

Together with the real route they split a request's cost into HTTP, the V2
protocol, and inference (``make bench``, ``make profile``). Only the benchmark
registers them (``register``), in servers it starts from ``noop_service``; the
service itself never answers them.
"""

from __future__ import annotations

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from cnnserve.serving.core import TensorResult
from cnnserve.serving.errors import ServiceError
from cnnserve.serving.fastlane import V2_INFER_PATH, FastRoutes
from cnnserve.serving.http_common import error_response, read_body
from cnnserve.serving.repository import ModelVersion
from cnnserve.serving.v2.dataplane import DataPlane
from cnnserve.serving.v2.rest import answer_infer

NOOP_PROTOCOL = "noop-v2-rest"  # the protocol label its requests are counted under
NOOP_SERVICE = "loadtests.bench.noop_service:CnnServe"  # the service with these routes: running_server(target=...)


async def noop(request: Request) -> Response:
    """``POST /noop``: read the body, answer ``{}``."""
    try:
        await read_body(request)
    except ServiceError as exc:  # a body that never came
        return error_response(exc)
    return Response(b"{}", media_type="application/json")


async def noop_infer(request: Request) -> Response:
    """``POST /noop/v2/models/.../infer``: the V2 REST route with zero outputs."""
    state = request.app.state
    if getattr(state, "noop_dataplane", None) is None:
        state.noop_dataplane = DataPlane(state.core, compute=zero_compute)
    return await answer_infer(request, state.noop_dataplane, NOOP_PROTOCOL)


async def zero_compute(model: ModelVersion, images: np.ndarray, deadline: float) -> TensorResult:
    """The model's outputs for ``images``, all zeros, at once."""
    count = len(images)
    boxes = np.zeros((count, 4), np.float32) if model.has_boxes else None
    timings = {"queue_ms": 0.0, "compute_ms": 0.0, "batch_images": count}
    return TensorResult(model, np.zeros((count, len(model.labels)), np.float32), boxes, timings)


def register(routes: FastRoutes) -> None:
    """Add ``POST /noop`` and ``POST /noop/v2/models/{name}[/versions/{v}]/infer`` to a fast lane's routes."""
    routes.add("POST", noop, path="/noop")
    routes.add("POST", noop_infer, pattern="^/noop" + V2_INFER_PATH, protocol=NOOP_PROTOCOL)
