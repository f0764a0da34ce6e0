"""What gRPC itself costs a Python server, with nothing of cnnserve behind it.

    python -m loadtests.bench.grpc_floor --seconds 8

A ``grpc.aio`` server in its own process answers ``ModelInfer`` with a fixed
reply after a 20 ms sleep (a batch's worth of waiting), on uvloop as the
service's workers run; the one-channel load of the benchmark
(``grpc_channel.py``: 64 calls in flight, a zero tensor of ResNet-18's input)
calls it. The server's CPU per call is the floor under the one-channel target:
on 2 cores every millisecond of it is taken from ONNX Runtime. Measured here
(AMD EPYC, 2 cores, grpcio 1.85.3, 2026-11-26): 0.51-0.59 ms of server CPU
and 0.33-0.37 ms of client CPU per call, whatever the tensor's size (a 4x4
input: 0.51 ms); the standard event loop 0.66 ms, a synchronous server with a
thread pool 0.75 ms, HTTP/2 frames of 1 MiB 0.53-0.60 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time

import psutil

from ..local_server import free_port
from .grpc_channel import one_channel

SHAPE = [1, 3, 64, 64]
WAIT_S = 0.02


def serve(port: int, ready) -> None:
    """The bare servicer (in a child process), on uvloop like a BentoML worker."""
    import grpc
    import uvloop

    from cnnserve.serving.v2 import inference_pb2 as pb
    from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc

    answer = pb.ModelInferResponse(
        model_name="floor",
        outputs=[pb.ModelInferResponse.InferOutputTensor(name="probabilities", datatype="FP32", shape=[1, 10])],
        raw_output_contents=[bytes(40)],
    )

    class Floor(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            await asyncio.sleep(WAIT_S)
            return answer

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    uvloop.run(main())


def measure(seconds: float, concurrency: int = 64) -> dict:
    """Calls per second, and the server's and the client's CPU per call, over one channel."""
    port, ready = free_port(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the bare gRPC server did not start")
        address = f"127.0.0.1:{port}"
        one_channel("floor", address, SHAPE, concurrency, min(2.0, seconds))  # warm up
        process = psutil.Process(server.pid)
        server_before, client_before = process.cpu_times(), os.times()
        began = time.perf_counter()
        load = one_channel("floor", address, SHAPE, concurrency, seconds)
        calls = load["throughput_rps"] * (time.perf_counter() - began)
        server_after, client_after = process.cpu_times(), os.times()
    finally:
        server.kill()
        server.join()
    server_cpu = server_after.user + server_after.system - server_before.user - server_before.system
    client_cpu = client_after.user + client_after.system - client_before.user - client_before.system
    return {
        "calls_per_s": load["throughput_rps"],
        "server_cpu_ms_per_call": 1000 * server_cpu / calls,
        "client_cpu_ms_per_call": 1000 * client_cpu / calls,
        "errors": load["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    figures = measure(args.seconds, args.concurrency)
    print(f"{figures['calls_per_s']:.0f} calls/s on one channel ({args.concurrency} in flight): "
          f"{figures['server_cpu_ms_per_call']:.3f} ms of server CPU and {figures['client_cpu_ms_per_call']:.3f} ms "
          f"of client CPU per call, {figures['errors']} errors")


if __name__ == "__main__":
    main()
