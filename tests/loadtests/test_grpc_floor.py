"""The floor under the one-channel gRPC target: a bare grpc.aio servicer in its own process, loaded over one
channel, and the server's and the client's CPU per call."""

from loadtests.bench.grpc_floor import measure


def test_a_bare_grpc_server_is_priced_per_call_over_one_channel():
    figures = measure(seconds=1.0, concurrency=8)
    assert figures["errors"] == 0
    assert figures["calls_per_s"] > 100  # 8 callers, each waiting 20 ms a call: up to 400
    assert 0 < figures["server_cpu_ms_per_call"] < 50
    assert 0 < figures["client_cpu_ms_per_call"] < 50
