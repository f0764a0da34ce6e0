"""Many calls in flight on ONE gRPC channel, as ``tritonclient.grpc`` and most Python clients make them.

perf_analyzer spreads its calls over several connections, so the workers share
them; one channel is one HTTP/2 connection, which lands on one worker. This
load is the other pattern: ``concurrency`` closed-loop callers on a single
``grpc.aio`` channel, each sending a zero tensor of the model's input shape.
A Python client costs the server's cores more than perf_analyzer does, which
the figures include.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc

from ..scenarios.v2_wire import grpc_request

ONE_CHANNEL = "grpc-one-channel"  # its name among the protocols; measured for the targets only


async def _load(model: str, address: str, shape: list[int], concurrency: int, seconds: float) -> dict:
    request = grpc_request(model, np.zeros(shape, dtype=np.float32))
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(request)
        began = time.perf_counter()
        until = began + seconds

        async def caller() -> None:
            nonlocal errors
            while time.perf_counter() < until:
                sent = time.perf_counter()
                try:
                    await stub.ModelInfer(request)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "throughput_rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) * 1000 if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) * 1000 if latencies else None,
        "errors": errors,
    }


def one_channel(model: str, address: str, shape: list[int], concurrency: int, seconds: float) -> dict:
    """Throughput and latency of ``concurrency`` callers sharing one gRPC channel for ``seconds``."""
    return asyncio.run(_load(model, address, shape, concurrency, seconds))
