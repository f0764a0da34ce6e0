"""The server a user would otherwise write by hand: FastAPI + ONNX Runtime, no batching.

It speaks just enough of the Open Inference Protocol (V2 REST, JSON and binary
tensors) for perf_analyzer to drive it, one ``session.run`` per request, so the
benchmark compares cnnserve with it on the same client, model and inputs. It
deliberately imports nothing from cnnserve.

    CNNSERVE_BASELINE_MODEL=models/resnet18-digits/2/model.onnx \\
        uvicorn loadtests.bench.baseline_fastapi:app --host 127.0.0.1 --port 8000 --workers 2
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request, Response

MODEL_PATH = Path(os.environ.get("CNNSERVE_BASELINE_MODEL", "models/lenet5-digits/2/model.onnx"))
MODEL_NAME = MODEL_PATH.parents[1].name
THREADS = int(os.environ.get("CNNSERVE_BASELINE_THREADS", "1"))

options = ort.SessionOptions()
options.intra_op_num_threads = THREADS
session = ort.InferenceSession(str(MODEL_PATH), options, providers=["CPUExecutionProvider"])
INPUT = session.get_inputs()[0]
OUTPUTS = [o.name for o in session.get_outputs()]

app = FastAPI()


def check_model(name: str) -> None:
    if name != MODEL_NAME:
        raise HTTPException(404, f"unknown model {name}")


@app.get("/v2")
def server_metadata() -> dict:
    return {"name": "fastapi-baseline", "version": "1", "extensions": ["binary_tensor_data"]}


@app.get("/v2/health/ready")
def ready() -> dict:
    return {}


@app.get("/v2/models/{name}")
def metadata(name: str) -> dict:
    check_model(name)
    return {
        "name": MODEL_NAME,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": INPUT.name, "datatype": "FP32", "shape": [-1, *INPUT.shape[1:]]}],
        "outputs": [
            {"name": o.name, "datatype": "FP32", "shape": [-1, *o.shape[1:]]} for o in session.get_outputs()
        ],
    }


@app.get("/v2/models/{name}/config")
def config(name: str) -> dict:
    check_model(name)
    return {
        "name": MODEL_NAME,
        "max_batch_size": 64,
        "input": [{"name": INPUT.name, "data_type": "TYPE_FP32", "dims": INPUT.shape[1:]}],
        "output": [{"name": o.name, "data_type": "TYPE_FP32", "dims": o.shape[1:]} for o in session.get_outputs()],
    }


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    check_model(name)
    body = await request.body()
    header_length = int(request.headers.get("inference-header-content-length", len(body)))
    header = json.loads(body[:header_length])
    tensor = header["inputs"][0]
    if "data" in tensor:
        images = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
    else:
        images = np.frombuffer(body[header_length:], np.float32).reshape(tensor["shape"])
    results = session.run(OUTPUTS, {INPUT.name: images})
    echo = {"id": header["id"]} if "id" in header else {}  # the protocol's request id, which perf_analyzer --async checks
    binary = header.get("parameters", {}).get("binary_data_output", False) or any(
        o.get("parameters", {}).get("binary_data") for o in header.get("outputs", [])
    )
    if not binary:
        outputs = [
            {"name": n, "datatype": "FP32", "shape": list(r.shape), "data": r.ravel().tolist()}
            for n, r in zip(OUTPUTS, results)
        ]
        return Response(json.dumps({"model_name": MODEL_NAME, **echo, "outputs": outputs}), media_type="application/json")
    outputs = [
        {"name": n, "datatype": "FP32", "shape": list(r.shape), "parameters": {"binary_data_size": r.nbytes}}
        for n, r in zip(OUTPUTS, results)
    ]
    head = json.dumps({"model_name": MODEL_NAME, **echo, "outputs": outputs}).encode()
    return Response(
        head + b"".join(r.tobytes() for r in results),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
