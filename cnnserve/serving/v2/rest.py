"""The Open Inference Protocol over HTTP/REST, with the binary tensor extension.

Thin: each route decodes its request into the data plane's terms, calls it,
and encodes the answer. A request whose ``Inference-Header-Content-Length``
header is set carries that many bytes of JSON followed by the binary tensors
(in input order, each ``parameters.binary_data_size`` long); outputs come back
binary when asked (``parameters.binary_data`` per output, or
``binary_data_output`` for all), which is what tritonclient and perf_analyzer do.
"""

from __future__ import annotations

import functools
import json

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidInput, ModelUnavailable, ServiceError, whole_number
from ..http_common import BytesResponse, header, read_body, timeout_ms
from ..http_common import error_response as error
from .dataplane import DataPlane
from .tensors import Limits, Tensor, from_raw, from_values, raw_bytes

HEADER_LENGTH = b"inference-header-content-length"
COMPACT = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps with options builds one a call
PROTOCOL = "v2-rest"  # the protocol label V2 REST inference is counted under


def plane(request: Request) -> DataPlane:
    return request.app.state.dataplane


def parameters_of(item: dict, where: str) -> dict:
    """An object's ``parameters``, which the protocol requires to be a JSON object."""
    value = item.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: parameters must be a JSON object")
    return value


def boolean_parameter(parameters: dict, name: str, where: str) -> bool:
    """A true/false parameter, which must be a JSON boolean: "no" and "false" were taken as true."""
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: {name} must be true or false, got {value!r}"[:200])
    return value


def parsed_json(data: bytes, what: str):
    """A client's JSON; what Python's parser refuses beyond syntax is the client's error too: nesting past the
    recursion limit (RecursionError) and integers past 4,300 digits (a ValueError), each a 500 before."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def split_body(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """The JSON header and a view of the binary tensors after it. A view, not a slice: slicing copied the
    tensors twice (here and per input), 49 KB each for a ResNet-18 image."""
    json_length = len(body)
    if header_length is not None:
        json_length = whole_number(header_length, "Inference-Header-Content-Length")
        if json_length > len(body):
            raise InvalidInput(f"Inference-Header-Content-Length is {json_length} but the body has {len(body)} bytes")
    payload = parsed_json(body[:json_length], "the request")
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InvalidInput('the request must be a JSON object with an "inputs" list')
    return payload, memoryview(body)[json_length:]


def parse_inputs(payload: dict, binary: memoryview, limits: Limits) -> list[Tensor]:
    tensors, offset = [], 0
    for item in payload["inputs"]:
        if not isinstance(item, dict) or not {"name", "datatype", "shape"} <= set(item):
            raise InvalidInput('every input needs "name", "datatype" and "shape"')
        name, datatype, shape = str(item["name"]), str(item["datatype"]), item["shape"]
        if not isinstance(shape, list):
            raise InvalidInput(f"input {name!r}: shape must be a list")
        size = parameters_of(item, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if "data" in item:  # which would it be? (gRPC refuses raw and typed contents together alike)
                raise InvalidInput(f"input {name!r} has both data and binary_data_size: send one, not both")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a whole number of bytes, got {size!r}")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size} but only {len(binary) - offset} binary bytes remain"
                )
            tensors.append(from_raw(name, datatype, shape, binary[offset : offset + size], limits))
            offset += size
        elif "data" in item:
            tensors.append(from_values(name, datatype, shape, item["data"], limits))
        else:
            raise InvalidInput(f"input {name!r} has neither data nor binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} binary bytes follow the JSON that no input claims")
    return tensors


def requested_outputs(payload: dict) -> tuple[list[str] | None, set[str]]:
    """Names asked for (None: all) and which of them to send binary."""
    all_binary = boolean_parameter(parameters_of(payload, "the request"), "binary_data_output", "the request")
    outputs = payload.get("outputs")
    if not outputs:
        return None, {"*"} if all_binary else set()
    if not isinstance(outputs, list):
        raise InvalidInput('"outputs" must be a list')
    names, binary = [], set()
    for item in outputs:
        if not isinstance(item, dict) or "name" not in item:
            raise InvalidInput('every requested output needs a "name"')
        names.append(str(item["name"]))
        where = f"output {names[-1]!r}"
        if boolean_parameter(parameters_of(item, where), "binary_data", where) or all_binary:
            binary.add(names[-1])
    return names, binary


def encode_response(model, request_id, outputs: list[Tensor], binary: set[str], timings: dict) -> BytesResponse:
    described, chunks = [], []
    for tensor in outputs:
        if "*" in binary or tensor.name in binary:
            chunk = raw_bytes(tensor)
            described.append(binary_output(tensor.name, tensor.datatype, tensor.array.shape, len(chunk)))
            chunks.append(chunk)
        else:
            entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.array.shape),
                     "data": tensor.array.ravel().tolist()}
            described.append(COMPACT.encode(entry))
    header = {"model_name": model.name, "model_version": str(model.version), "parameters": timings}
    if request_id:
        header["id"] = request_id
    text = (COMPACT.encode(header)[:-1] + ',"outputs":[' + ",".join(described) + "]}").encode()
    if not chunks:
        return BytesResponse(text, b"application/json")
    return BytesResponse(text + b"".join(chunks), b"application/octet-stream",
                         (HEADER_LENGTH, str(len(text)).encode()))


@functools.lru_cache(maxsize=1024)
def binary_output(name: str, datatype: str, shape: tuple[int, ...], size: int) -> str:
    """The JSON that describes one binary output; the same few shapes recur, so it is encoded once each."""
    entry = {"name": name, "datatype": datatype, "shape": list(shape), "parameters": {"binary_data_size": size}}
    return COMPACT.encode(entry)


def request_timeout_ms(payload: dict, request: Request) -> float | None:
    """``parameters.timeout`` in microseconds (Triton's form), else the X-Timeout-Ms header."""
    timeout_us = parameters_of(payload, "the request").get("timeout")
    if timeout_us is None:
        return timeout_ms(request.scope)
    if not isinstance(timeout_us, (int, float)) or isinstance(timeout_us, bool) or timeout_us != timeout_us:  # NaN
        raise InvalidInput(f"parameters.timeout must be a number of microseconds, got {timeout_us!r}")
    return max(-1e18, min(timeout_us, 1e18)) / 1000  # an integer of 400 digits would overflow the division


async def infer(request: Request) -> Response | BytesResponse:
    return await answer_infer(request, plane(request), PROTOCOL)


async def answer_infer(request: Request, dataplane: DataPlane, protocol: str) -> Response | BytesResponse:
    """One V2 REST inference request through ``dataplane``, counted under ``protocol``."""
    try:
        with dataplane.core.refusals(protocol):
            payload, binary = split_body(await read_body(request), header(request.scope, HEADER_LENGTH))
            names, binary_outputs = requested_outputs(payload)
            timeout = request_timeout_ms(payload, request)
        model, outputs, timings = await dataplane.infer(
            request.path_params["name"],
            request.path_params.get("version"),
            lambda: parse_inputs(payload, binary, dataplane.limits),
            names,
            protocol,
            timeout,
        )
    except ServiceError as exc:
        return error(exc)
    return encode_response(model, payload.get("id"), outputs, binary_outputs, timings)


async def server_metadata(request: Request) -> Response:
    return JSONResponse(plane(request).server_metadata())


async def server_live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def server_ready(request: Request) -> Response:
    ready = await plane(request).server_ready()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def model_ready(request: Request) -> Response:
    try:
        ready = await plane(request).model_ready(request.path_params["name"], request.path_params.get("version"))
    except ModelUnavailable:
        ready = False
    except ServiceError as exc:
        return error(exc)
    return JSONResponse(
        {"name": request.path_params["name"], "ready": ready}, status_code=200 if ready else 503
    )


async def model_metadata(request: Request) -> Response:
    try:
        return JSONResponse(plane(request).model_metadata(request.path_params["name"], request.path_params.get("version")))
    except ServiceError as exc:
        return error(exc)


async def model_config(request: Request) -> Response:
    try:
        return JSONResponse(plane(request).model_config(request.path_params["name"], request.path_params.get("version")))
    except ServiceError as exc:
        return error(exc)


async def statistics(request: Request) -> Response:
    try:
        return JSONResponse(plane(request).statistics(request.path_params.get("name"), request.path_params.get("version")))
    except ServiceError as exc:
        return error(exc)


async def repository_index(request: Request) -> Response:
    try:
        body = await read_body(request)
        ready = boolean_parameter(parsed_json(body, "the index request"), "ready", "the index request") \
            if body.strip() else False
    except AttributeError:
        return error(InvalidInput("the index request's body must be a JSON object such as {\"ready\": true}"))
    except ServiceError as exc:
        return error(exc)
    except ClientDisconnect:  # gone mid-body: nobody to answer, nothing to log
        return Response(status_code=400)
    return JSONResponse(plane(request).repository_index(ready))


async def repository_load(request: Request) -> Response:
    return await repository_change(request, plane(request).load)


async def repository_unload(request: Request) -> Response:
    return await repository_change(request, plane(request).unload)


async def repository_change(request: Request, change) -> Response:
    try:
        await change(request.path_params["name"])
    except ServiceError as exc:
        return error(exc)
    return JSONResponse({})


def v2_routes() -> list[Route]:
    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", server_live, methods=["GET"]),
        Route("/v2/health/ready", server_ready, methods=["GET"]),
        Route("/v2/models/stats", statistics, methods=["GET"]),  # before /v2/models/{name}, which it would match
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(f"{prefix}/ready", model_ready, methods=["GET"]),
            Route(f"{prefix}/config", model_config, methods=["GET"]),
            Route(f"{prefix}/stats", statistics, methods=["GET"]),
            Route(f"{prefix}/infer", infer, methods=["POST"]),
        ]
    return routes
