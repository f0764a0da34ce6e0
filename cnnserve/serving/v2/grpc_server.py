"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``),
plus the standard ``grpc.health.v1`` service and server reflection.

A ``grpc.aio`` server runs inside each gateway worker, on the same event loop
as the REST API, so its requests reach the same inference core and batcher.
With several gateway workers each binds the same port (SO_REUSEPORT, gRPC's
default on Linux) and the kernel spreads connections between them.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..auth import GrpcKeyInterceptor, key_check
from ..batcher import ARRIVES_ONE_PER_PASS
from ..config import Settings
from ..errors import InvalidInput, ModelUnavailable, ServiceError
from . import inference_pb2 as pb
from . import inference_pb2_grpc as pb_grpc
from .dataplane import DataPlane
from .tensors import BYTES, Limits, Tensor, from_raw, from_values, raw_bytes

log = logging.getLogger("cnnserve.grpc")
SERVICE_NAME = "inference.GRPCInferenceService"
INFER_METHOD = f"/{SERVICE_NAME}/ModelInfer"
PROTOCOL = "grpc"  # the protocol label gRPC inference is counted under
TYPED_FIELD = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", BYTES: "bytes_contents",
}


async def abort(context: grpc.aio.ServicerContext, exc: ServiceError):
    metadata = tuple((k.lower(), v) for k, v in exc.headers().items())
    if metadata:
        context.set_trailing_metadata(metadata)
    await context.abort(getattr(grpc.StatusCode, exc.grpc_code), exc.message)


def input_tensors(request: pb.ModelInferRequest, limits: Limits) -> list[Tensor]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    if raw and any(item.HasField("contents") for item in request.inputs):  # as Triton: which would be the data?
        raise InvalidInput("send each input's data either as raw_input_contents or as contents, not both")
    tensors = []
    for index, item in enumerate(request.inputs):
        shape = list(item.shape)
        if raw:
            tensors.append(from_raw(item.name, item.datatype, shape, raw[index], limits))
        else:
            field = TYPED_FIELD.get(item.datatype, "fp32_contents")
            tensors.append(from_values(item.name, item.datatype, shape, list(getattr(item.contents, field)), limits))
    return tensors


def parameter(value: int | float) -> pb.InferParameter:
    return pb.InferParameter(int64_param=value) if isinstance(value, int) else pb.InferParameter(double_param=value)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane, settings: Settings):
        self.plane = dataplane
        self.settings = settings

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=await self.plane.server_ready())

    async def ModelReady(self, request, context):
        try:
            return pb.ModelReadyResponse(ready=await self.plane.model_ready(request.name, request.version))
        except ModelUnavailable:
            return pb.ModelReadyResponse(ready=False)
        except ServiceError as exc:
            await abort(context, exc)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    async def ModelMetadata(self, request, context):
        try:
            metadata = self.plane.model_metadata(request.name, request.version)
        except ServiceError as exc:
            await abort(context, exc)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["outputs"]],
        )

    async def ModelConfig(self, request, context):
        try:
            config = self.plane.model_config(request.name, request.version)
        except ServiceError as exc:
            await abort(context, exc)
        message = pb.ModelConfig(
            name=config["name"],
            platform=config["platform"],
            backend=config["backend"],
            max_batch_size=config["max_batch_size"],
            input=[
                pb.ModelInput(name=i["name"], data_type=i["data_type"], format=i["format"], dims=i["dims"])
                for i in config["input"]
            ],
            output=[pb.ModelOutput(name=o["name"], data_type=o["data_type"], dims=o["dims"]) for o in config["output"]],
        )
        if "dynamic_batching" in config:
            message.dynamic_batching.CopyFrom(pb.ModelDynamicBatching(**config["dynamic_batching"]))
        return pb.ModelConfigResponse(config=message)

    async def ModelStatistics(self, request, context):
        try:
            statistics = self.plane.statistics(request.name, request.version)
        except ServiceError as exc:
            await abort(context, exc)
        return json_format.ParseDict(statistics, pb.ModelStatisticsResponse())

    async def RepositoryIndex(self, request, context):
        models = self.plane.repository_index(request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in models])

    async def RepositoryModelLoad(self, request, context):
        await self.change_repository(self.plane.load, request.model_name, context)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self.change_repository(self.plane.unload, request.model_name, context)
        return pb.RepositoryModelUnloadResponse()

    @staticmethod
    async def change_repository(change, name: str, context) -> None:
        try:
            await change(name)
        except ServiceError as exc:
            await abort(context, exc)

    async def ModelInfer(self, request, context):
        ARRIVES_ONE_PER_PASS.set(True)  # this call's own task: its batches leave the loop free for the next call
        try:
            model, outputs, timings = await self.plane.infer(
                request.model_name,
                request.model_version,
                lambda: input_tensors(request, self.plane.limits),
                [o.name for o in request.outputs] or None,
                PROTOCOL,
                None if (remaining := context.time_remaining()) is None else max(remaining * 1000, 0.001),
            )
        except ServiceError as exc:
            await abort(context, exc)
        return pb.ModelInferResponse(
            model_name=model.name,
            model_version=str(model.version),
            id=request.id,
            parameters={k: parameter(v) for k, v in timings.items()},
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype, shape=list(t.array.shape))
                for t in outputs
            ],
            raw_output_contents=[raw_bytes(t) for t in outputs],
        )


class GrpcServer:
    """Starts with the gateway worker and stops with it."""

    def __init__(self, dataplane: DataPlane, settings: Settings):
        self.plane = dataplane
        self.settings = settings
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()

    def options(self) -> list[tuple[str, int]]:
        """The server's channel arguments: message limits, the shared port, and how long a connection lives.

        Clients such as tritonclient keep a few connections open for good, and the kernel (SO_REUSEPORT) or a
        Kubernetes Service places each once, when it opens: a worker or a pod added later gets none of their
        calls, and one that drew more connections keeps them. Asking every connection to go after
        ``grpc_max_connection_age_s`` (gRPC adds up to 10% of jitter) makes clients reconnect and be placed
        again; calls in flight then have the request timeout (and a second) to finish.
        """
        limit = self.settings.grpc_max_message_bytes
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1),
        ]
        if self.settings.grpc_max_connection_age_s > 0:
            options += [
                ("grpc.max_connection_age_ms", round(self.settings.grpc_max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", round(self.settings.request_timeout_ms) + 1000),
            ]
        return options

    async def start(self) -> None:
        self.server = grpc.aio.server(
            interceptors=[GrpcKeyInterceptor(key_check(self.settings), self.count_refusal)],
            options=self.options(),
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.plane, self.settings), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # Reflection lets grpcurl-style tools list and call the services without the .proto file.
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        if self.server.add_insecure_port(address) == 0:
            raise RuntimeError(f"cannot bind the gRPC port {address}")
        await self.server.start()
        await self.mark_serving(True)  # it starts with the worker's lifespan, after every model has loaded
        log.info("gRPC (inference.GRPCInferenceService, grpc.health.v1) listening on %s", address)

    def count_refusal(self, method: str) -> None:
        """An inference call refused for its API key is counted like a refused REST prediction."""
        if method == INFER_METHOD:
            self.plane.core.count_refusal(PROTOCOL, "unauthorised")

    async def mark_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            await self.mark_serving(False)
            await self.server.stop(grace)
