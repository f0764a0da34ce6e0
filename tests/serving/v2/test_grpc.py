"""The Open Inference Protocol over gRPC against the real service, through the
project's generated stubs: every RPC, raw and typed contents, image bytes,
status codes for client mistakes, and the standard health service."""

import struct

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.contract.images import decode_image
from cnnserve.serving.v2 import inference_pb2 as pb
from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc
from loadtests.digit_images import digit_files
from tests.committed import VERSIONS
from tests.serving.helpers import grpc_request

MODEL = "resnet18-digits"
VERSION = VERSIONS[MODEL]


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def digits():
    files = digit_files(3, 64, count=3, seed=9)
    return files, np.stack([decode_image(f.data, 3, 64, 64, 10**7)[0] for f in files])


def infer_raw(stub, images, model=MODEL, outputs=()):
    return stub.ModelInfer(grpc_request(model, images, outputs))


def output(response, name) -> np.ndarray:
    index = [o.name for o in response.outputs].index(name)
    return np.frombuffer(response.raw_output_contents[index], np.float32).reshape(list(response.outputs[index].shape))


def test_server_and_model_health(stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=str(VERSION))).ready


def test_standard_health_service_reports_serving(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_metadata_and_config(stub):
    metadata = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert metadata.name == "cnnserve" and "binary_tensor_data" in metadata.extensions
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
    assert list(model.inputs[0].shape) == [-1, 3, 64, 64]
    config = stub.ModelConfig(pb.ModelConfigRequest(name=MODEL)).config
    assert config.max_batch_size > 0 and list(config.input[0].dims) == [3, 64, 64]
    assert config.input[0].data_type == pb.TYPE_FP32


def test_raw_inference_matches_predict(server, stub, digits):
    files, images = digits
    response = infer_raw(stub, images)
    probabilities = output(response, "probabilities")
    for file, row in zip(files, probabilities):
        answer = server.client.post("/predict", files={"image": ("d", file.data)}, data={"model": MODEL}).json()
        assert str(row.argmax()) == answer["label"]
    assert output(response, "boxes").shape == (3, 4)
    assert response.parameters["batch_images"].int64_param >= 3


def test_typed_contents_and_selected_outputs(stub, digits):
    _, images = digits
    request = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[pb.ModelInferRequest.InferInputTensor(
            name="images", datatype="FP32", shape=list(images.shape),
            contents=pb.InferTensorContents(fp32_contents=images.ravel().tolist()))],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="boxes")],
    )
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["boxes"]
    np.testing.assert_allclose(output(response, "boxes"), output(infer_raw(stub, images), "boxes"), atol=1e-5)


def test_image_bytes(stub, digits):
    files, images = digits
    request = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image_bytes", datatype="BYTES", shape=[len(files)])],
        raw_input_contents=[b"".join(struct.pack("<I", len(f.data)) + f.data for f in files)],
    )
    from_files = output(stub.ModelInfer(request), "probabilities")
    np.testing.assert_allclose(from_files, output(infer_raw(stub, images), "probabilities"), atol=1e-5)


@pytest.mark.parametrize(
    ("request_", "code", "phrase"),
    [
        (lambda: infer_raw_request(np.zeros((1, 1, 64, 64), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        (lambda: infer_raw_request(np.zeros((1, 3, 64, 64), np.float32), datatype="INT32"),
         grpc.StatusCode.INVALID_ARGUMENT, "FP32"),
        (lambda: infer_raw_request(np.zeros((1, 3, 64, 64), np.float32), model="nope"),
         grpc.StatusCode.NOT_FOUND, "unknown model"),
        (lambda: infer_raw_request(np.zeros((1, 3, 64, 64), np.float32), name="pixels"),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown input"),
        (lambda: infer_raw_request(np.full((1, 3, 64, 64), np.inf, np.float32)),
         grpc.StatusCode.INVALID_ARGUMENT, "NaN or infinite"),
        (lambda: both_contents(np.zeros((1, 3, 64, 64), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "not both"),
        # echoed whole, a 10 KB name passed gRPC's 8 KiB metadata limit: the client saw RESOURCE_EXHAUSTED
        (lambda: infer_raw_request(np.zeros((1, 3, 64, 64), np.float32), model="n" * 10_000),
         grpc.StatusCode.NOT_FOUND, "unknown model 'nnnn"),
    ],
    ids=["wrong-shape", "wrong-datatype", "unknown-model", "unknown-input", "infinite", "raw-and-typed",
         "unknown-model-of-a-long-name"],
)
def test_client_mistakes_map_to_status_codes(stub, request_, code, phrase):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request_())
    assert caught.value.code() == code and phrase in caught.value.details()


def infer_raw_request(images, model=MODEL, name="images", datatype="FP32"):
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(images.shape))],
        raw_input_contents=[images.tobytes()],
    )


def both_contents(images):
    request = infer_raw_request(images)
    request.inputs[0].contents.fp32_contents.extend(images.ravel().tolist())
    return request


def test_unknown_model_metadata_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_message_over_the_size_limit_is_refused(server, stub):
    from cnnserve.serving.config import Settings

    oversized = Settings().grpc_max_message_bytes + 1024
    request = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=[1, 3, 64, 64])],
        raw_input_contents=[bytes(oversized)],
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.ServerLive(pb.ServerLiveRequest()).live
