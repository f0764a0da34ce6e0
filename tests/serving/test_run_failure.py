"""A model that fails at run time on some inputs (an operator that refuses their values): each request it fails
on gets a 500 (gRPC: INTERNAL) naming the model and ONNX Runtime's reason, the requests batched with it are
answered, and the worker serves on."""

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc
from loadtests.local_server import running_server
from tests.serving.helpers import grpc_request, lenet5_rewired, v2_json

REFUSED_ABOVE = 1.0  # the model fails on any image whose brightest pixel is 2 or more
REASON = "indices element out of data bounds"  # what ONNX Runtime's Gather says then


def fails_on_bright_pixels(graph) -> None:
    """A Gather that indexes a two-element table by the image's brightest pixel: zero, added to the probabilities,
    for pixels in [0, 2); ONNX Runtime refuses the index for brighter ones."""
    graph.initializer.append(numpy_helper.from_array(np.zeros(2, np.float32), "table"))
    graph.node.extend([
        helper.make_node("ReduceMax", ["images"], ["brightest"], keepdims=0),
        helper.make_node("Cast", ["brightest"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["nothing"]),
        helper.make_node("Add", ["unchecked", "nothing"], ["probabilities"]),
    ])


@pytest.fixture(scope="module")
def fragile(tmp_path_factory):
    models = lenet5_rewired(tmp_path_factory.mktemp("repo"), "fragile", fails_on_bright_pixels)
    with running_server(tmp_path_factory.mktemp("server"), models_dir=models, workers=1, precision="fp32") as server:
        yield server


def infer(server, value: float):
    return server.client.post("/v2/models/fragile/infer", json=v2_json(np.full((1, 1, 32, 32), value, np.float32)))


def test_the_failing_request_gets_a_500_naming_the_model_and_the_reason(fragile):
    response = infer(fragile, 3.0)
    assert response.status_code == 500
    assert response.json()["error"].startswith("model fragile/1 failed to run this request's images: ")
    assert REASON in response.json()["error"]
    assert "model fragile/1 failed to run 1 images: " in fragile.log()
    assert infer(fragile, 0.5).status_code == 200, "the worker serves on"


def test_over_grpc_it_is_internal_with_the_reason(fragile):
    with grpc.insecure_channel(fragile.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.ModelInfer(grpc_request("fragile", np.full((1, 1, 32, 32), 3.0, np.float32)))
        assert failed.value.code() == grpc.StatusCode.INTERNAL and REASON in failed.value.details()
        assert stub.ModelInfer(grpc_request("fragile", np.full((1, 1, 32, 32), 0.5, np.float32))).outputs


def test_requests_batched_with_a_failing_one_are_answered(fragile):
    """Bursts of 32 requests, one in four failing: before the batcher split failed batches, good requests batched
    with a failing one got its 500 with it (here the third of the first burst already did)."""
    values = [3.0 if i % 4 == 1 else 0.5 for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        for _ in range(3):
            statuses = list(pool.map(lambda value: infer(fragile, value).status_code, values))
            assert statuses == [500 if value > REFUSED_ABOVE else 200 for value in values]
    counted = [line for line in fragile.client.get("/metrics").text.splitlines()
               if line.startswith("cnnserve_requests_total{") and 'model="fragile"' in line]
    assert any('outcome="server_error"' in line and not line.endswith(" 0.0") for line in counted)
