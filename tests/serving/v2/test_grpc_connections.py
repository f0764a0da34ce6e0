"""gRPC connections age: each is asked to go after ``grpc_max_connection_age_s``, so long-lived clients are placed
again over workers and pods, and the calls in flight when it goes still get their answers."""

import time

import grpc
import numpy as np

from cnnserve.serving.config import Settings
from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc
from cnnserve.serving.v2.grpc_server import GrpcServer
from loadtests.local_server import running_server
from tests.serving.helpers import grpc_request

MODEL = "lenet5-digits"


def test_a_client_on_one_channel_reconnects_after_the_age_and_every_call_is_answered(tmp_path):
    with running_server(tmp_path, workers="1", serve=MODEL, grpc_max_connection_age_s="1") as server:
        states: list[grpc.ChannelConnectivity] = []
        request = grpc_request(MODEL, np.zeros((1, 1, 32, 32), np.float32))
        answered = 0
        with grpc.insecure_channel(server.grpc_address) as channel:
            channel.subscribe(states.append)
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            until = time.monotonic() + 3.5
            while time.monotonic() < until:
                stub.ModelInfer(request, timeout=10)  # any failed call raises
                answered += 1
    assert answered > 10
    assert states.count(grpc.ChannelConnectivity.READY) >= 2  # connected, asked to go, connected again


def test_connections_never_age_when_the_setting_is_zero():
    names = [name for name, _ in GrpcServer(None, Settings(grpc_max_connection_age_s=0)).options()]
    assert "grpc.max_connection_age_ms" not in names
    assert "grpc.max_receive_message_length" in names
