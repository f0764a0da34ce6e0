"""Each HTTP response leaves in one socket write: what is written during one
pass of the event loop goes out together, except past 64 KiB (flow control)
and a lone request's response, which leaves as soon as it is complete; a real
uvicorn server over the coalescing protocol answers intact."""

import asyncio
import socket
import threading

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from uvicorn import config as uvicorn_config

from cnnserve.serving.metrics import pass_totals
from cnnserve.serving.patches.uvicorn_headers import HeaderClock
from cnnserve.serving.patches.uvicorn_writes import (
    FLUSH_AT_BYTES,
    CoalescingHttpProtocol,
    CoalescingTransport,
    coalesce_responses,
)
from tests.serving.patches.uvicorn_server import serving


class SocketStandIn:
    """Records what reaches the socket (the real transport is uvloop's, in C)."""

    def __init__(self):
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data):
        self.sent.append(bytes(data))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 5555) if name == "peername" else default


def test_the_writes_of_one_loop_pass_leave_in_one_write_at_its_end():
    async def scenario():
        socket_ = SocketStandIn()
        transport = CoalescingTransport(socket_, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        assert socket_.sent == []
        await asyncio.sleep(0)
        assert socket_.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]

    asyncio.run(scenario())


def test_a_large_stream_goes_out_as_it_grows_so_flow_control_still_applies():
    async def scenario():
        socket_ = SocketStandIn()
        transport = CoalescingTransport(socket_, asyncio.get_running_loop())
        chunk = b"x" * (FLUSH_AT_BYTES // 2 + 1)
        transport.write(chunk)
        transport.write(chunk)
        assert socket_.sent == [chunk + chunk]
        transport.write(b"tail")
        await asyncio.sleep(0)
        assert socket_.sent == [chunk + chunk, b"tail"]

    asyncio.run(scenario())


def test_closing_sends_what_is_held_first_and_a_closing_socket_gets_nothing_more():
    async def scenario():
        socket_ = SocketStandIn()
        transport = CoalescingTransport(socket_, asyncio.get_running_loop())
        transport.write(b"last words")
        transport.close()
        assert socket_.sent == [b"last words"] and socket_.closed
        transport.write(b"too late")
        await asyncio.sleep(0)
        assert socket_.sent == [b"last words"]

    asyncio.run(scenario())


def test_everything_but_writing_is_the_real_transports():
    async def scenario():
        transport = CoalescingTransport(SocketStandIn(), asyncio.get_running_loop())
        assert transport.get_extra_info("peername") == ("127.0.0.1", 5555)

    asyncio.run(scenario())


def test_once_installed_uvicorn_serves_http_with_the_coalescing_protocol(monkeypatch):
    monkeypatch.setitem(uvicorn_config.HTTP_PROTOCOLS, "auto", uvicorn_config.HTTP_PROTOCOLS["auto"])
    monkeypatch.setattr(HeaderClock, "header_timeout_s", HeaderClock.header_timeout_s)  # set by the install
    coalesce_responses(10.0)
    config = uvicorn.Config(Starlette())
    config.load()
    assert config.http_protocol_class is CoalescingHttpProtocol


@pytest.fixture
def coalescing_server():
    """A real uvicorn on 127.0.0.1 over the coalescing protocol: a small answer and a 1 MiB stream."""

    async def small(request):
        return Response(b'{"ok":true}', media_type="application/json")

    async def stream(request):
        async def pieces():
            for i in range(256):
                yield bytes([i]) * 4096

        return StreamingResponse(pieces(), media_type="application/octet-stream")

    with serving(Starlette(routes=[Route("/small", small), Route("/stream", stream)])) as port:
        yield f"http://127.0.0.1:{port}"


def test_a_real_server_answers_intact_over_one_keep_alive_connection(coalescing_server):
    with httpx.Client(base_url=coalescing_server, timeout=10) as client:
        for _ in range(20):
            answer = client.get("/small")
            assert answer.status_code == 200 and answer.json() == {"ok": True}
        streamed = client.get("/stream")
        assert streamed.content == b"".join(bytes([i]) * 4096 for i in range(256))
        assert client.get("/small").json() == {"ok": True}


def test_a_lone_response_leaves_when_complete_with_its_metric_updates_already_written():
    """The handler blocks the event loop once its response is complete: the client must get the
    answer meanwhile, and the metric updated before it must already read 1."""
    registry = CollectorRegistry()
    answered = Counter("answered", "", registry=registry)
    client_read = threading.Event()
    seen = {}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        pass_totals().inc(answered)
        await Response(b"done")(scope, receive, send)
        seen["released"] = client_read.wait(10)  # the loop's pass cannot end before the client reads

    with serving(app) as port:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = conn.recv(4096)
                seen["metric"] = registry.get_sample_value("answered_total")
        finally:
            client_read.set()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"done")
    assert seen["metric"] == 1
    assert seen["released"]
