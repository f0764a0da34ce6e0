"""The Open Inference Protocol on the wire: requests built from known pixels,
and answers decoded into ``Output`` tensors for the checks.

Requests are built once per run (see ``workload``); decoding refuses a
malformed answer with ``WrongAnswer`` rather than guessing.
"""

from __future__ import annotations

import json

import numpy as np

from cnnserve.serving.v2 import inference_pb2 as pb

from .checks import Output, WrongAnswer, require

INPUT = "images"
JSON_DECIMALS = 5  # pixels k/255 move by under 5e-6, and the JSON body stays small


def tensor_spec(pixels: np.ndarray, **extra) -> dict:
    return {"name": INPUT, "datatype": "FP32", "shape": list(pixels.shape), **extra}


def json_request(pixels: np.ndarray) -> bytes:
    """All outputs, as JSON data; pixels float32 [N, C, H, W]."""
    data = np.round(pixels.astype(np.float64), JSON_DECIMALS).ravel().tolist()
    return json.dumps({"inputs": [tensor_spec(pixels, data=data)]}, separators=(",", ":")).encode()


def binary_request(pixels: np.ndarray) -> tuple[bytes, int]:
    """``(body, JSON header length)``: the input and every output as binary tensors."""
    raw = np.ascontiguousarray(pixels, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [tensor_spec(pixels, parameters={"binary_data_size": len(raw)})],
            "parameters": {"binary_data_output": True},
        },
        separators=(",", ":"),
    ).encode()
    return header + raw, len(header)


def grpc_request(model: str, pixels: np.ndarray) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name=INPUT, datatype="FP32", shape=list(pixels.shape))],
        raw_input_contents=[np.ascontiguousarray(pixels, dtype="<f4").tobytes()],
    )


def float32_output(name: str, datatype: str, shape: list[int], raw: bytes) -> Output:
    require(datatype == "FP32", f"output {name!r} is {datatype}, expected FP32")
    count = int(np.prod(shape)) if shape else 1
    require(len(raw) == 4 * count, f"output {name!r}: {len(raw)} bytes for shape {shape} FP32")
    return Output(datatype, shape, np.frombuffer(raw, dtype="<f4").reshape(shape))


def parse_header(text: bytes) -> dict:
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WrongAnswer(f"the answer is not JSON: {exc}") from None
    require(isinstance(header, dict) and isinstance(header.get("outputs"), list), 'the answer has no "outputs" list')
    for entry in header["outputs"]:
        require(
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("datatype"), str)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in entry["shape"]),
            f"malformed output description {str(entry)[:200]}",
        )
    names = [entry["name"] for entry in header["outputs"]]
    require(len(set(names)) == len(names), f"outputs named more than once: {names}")
    return header


def outputs_from_json(body: bytes) -> tuple[dict, dict[str, Output]]:
    """``(response header, outputs)`` of an all-JSON answer."""
    header = parse_header(body)
    outputs = {}
    for entry in header["outputs"]:
        data = entry.get("data")
        require(isinstance(data, list), f"output {entry['name']!r} has no data list")
        try:
            array = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            raise WrongAnswer(f"output {entry['name']!r}: data is not a flat list of numbers") from None
        count = int(np.prod(entry["shape"])) if entry["shape"] else 1
        require(array.ndim == 1 and array.size == count, f"output {entry['name']!r}: {array.size} values "
                                                          f"for shape {entry['shape']}")
        outputs[entry["name"]] = Output(entry["datatype"], entry["shape"], array.reshape(entry["shape"]))
    return header, outputs


def outputs_from_binary(body: bytes, header_length: str | None) -> tuple[dict, dict[str, Output]]:
    """``(response header, outputs)`` of an answer whose outputs were asked for as binary."""
    require(header_length is not None and header_length.isdigit(), "no Inference-Header-Content-Length in the answer")
    length = int(header_length)
    require(length <= len(body), f"Inference-Header-Content-Length {length} > body length {len(body)}")
    header, offset, outputs = parse_header(body[:length]), length, {}
    for entry in header["outputs"]:
        size = (entry.get("parameters") or {}).get("binary_data_size")
        require(isinstance(size, int) and 0 <= size <= len(body) - offset,
                f"output {entry['name']!r}: binary_data_size {size!r} does not fit the body")
        outputs[entry["name"]] = float32_output(entry["name"], entry["datatype"], entry["shape"],
                                                body[offset : offset + size])
        offset += size
    require(offset == len(body), f"{len(body) - offset} bytes after the last output")
    return header, outputs


def outputs_from_grpc(response: pb.ModelInferResponse) -> dict[str, Output]:
    names = [tensor.name for tensor in response.outputs]
    require(len(set(names)) == len(names), f"outputs named more than once: {names}")
    require(len(response.raw_output_contents) == len(response.outputs),
            f"{len(response.raw_output_contents)} raw_output_contents for {len(response.outputs)} outputs")
    return {
        tensor.name: float32_output(tensor.name, tensor.datatype, list(tensor.shape), raw)
        for tensor, raw in zip(response.outputs, response.raw_output_contents)
    }
