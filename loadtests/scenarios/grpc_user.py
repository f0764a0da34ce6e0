"""The gRPC scenario: ``ModelInfer`` with raw tensor contents, through the
project's generated stubs, timed and reported to Locust like its HTTP users.

gRPC's own threads would block gevent, so its gevent integration is switched
on before any channel exists (Locust has already patched the standard library).
"""

from __future__ import annotations

import random
import time

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, tag, task

from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc

from . import v2_wire
from .catalog import SCENARIOS
from .checks import WrongAnswer, check_model, check_v2_outputs
from .lifecycle import current

grpc_gevent.init_gevent()

TIMEOUT_SECONDS = 60
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class GrpcStatusError(Exception):
    """The call ended with a gRPC status other than OK."""


class GrpcUser(User):
    """One channel, so one HTTP/2 connection, per user: each user is an independent client."""

    wait_time = constant(0)
    request_type = "grpc"
    request_name = "ModelInfer"

    def on_start(self) -> None:
        self.workload = current.workload
        self.target = self.workload.target
        options = self.environment.parsed_options
        self.channel = grpc.insecure_channel(
            options.grpc_host,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {options.api_key}"),) if options.api_key else ()
        self.position = random.randrange(1_000_000)

    def on_stop(self) -> None:
        self.channel.close()

    @tag(*SCENARIOS["grpc"].tags)
    @task
    def model_infer(self) -> None:
        self.position += 1
        request = self.workload.grpc[self.position % len(self.workload.grpc)]
        started, length, exception = time.perf_counter(), 0, None
        try:
            response = self.stub.ModelInfer(request.message, timeout=TIMEOUT_SECONDS, metadata=self.metadata)
        except grpc.RpcError as exc:
            response, exception = None, GrpcStatusError(f"{exc.code().name}: {exc.details()}")
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response is not None:
            length = response.ByteSize()
            try:
                check_model(response.model_name, response.model_version, self.target)
                check_v2_outputs(v2_wire.outputs_from_grpc(response), request.digits, self.target)
            except WrongAnswer as exc:
                exception = exc
        self.environment.events.request.fire(
            request_type=self.request_type, name=self.request_name, response_time=elapsed_ms,
            response_length=length, exception=exception, context={},
        )
