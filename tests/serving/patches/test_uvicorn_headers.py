"""A client has ``header_timeout_s`` for each request's headers (slowloris): a connection that sends nothing, or
trickles header lines, gets 408 and is closed; a kept-alive client that idles less is served, a request slower
than the timeout is not cut, and a request costs the clock no timer. Checked on the real server (the patch must
take effect where BentoML builds uvicorn's configuration) and on an in-process uvicorn."""

import asyncio
import contextlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from cnnserve.serving import patches as patching
from cnnserve.serving.config import Settings, load_settings
from cnnserve.serving.patches.uvicorn_headers import (
    UVICORN_DEFAULT,
    HeaderClock,
    HeaderClockProtocol,
    bound_header_time,
)
from cnnserve.serving.patches.uvicorn_writes import CoalescingHttpProtocol, coalesce_responses
from loadtests.local_server import running_server
from tests.serving.helpers import GOOD
from tests.serving.patches.uvicorn_server import serving

TIMEOUT = 1.0  # the real server's header_timeout_s
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
FORM = b'--b\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\nContent-Type: image/png\r\n\r\n' + \
    GOOD + b"\r\n--b--\r\n"


class Client:
    """One raw connection: what it sends, and the server's answers read off it one by one."""

    def __init__(self, address: tuple[str, int]):
        self.sock = socket.create_connection(address)
        self.buffer = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, bytes]:
        """The next response (one with a Content-Length): its status and body."""
        self.sock.settimeout(10)
        while b"\r\n\r\n" not in self.buffer:
            received = self.sock.recv(65536)
            assert received, f"closed before a response: {self.buffer!r}"
            self.buffer += received
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buffer = rest[length:]
        return int(head.split(b" ")[1]), rest[:length]

    def rest_until_closed(self, began: float, trickle: bool = False, limit: float = 8.0) -> tuple[bytes, float]:
        """Everything the server sends until it closes, and how long after ``began`` it closed (``limit`` at
        most); with ``trickle``, a header line every half second meanwhile."""
        answer, line = self.buffer, 0
        self.sock.settimeout(0.5 if trickle else 0.1)
        while time.perf_counter() - began < limit:
            try:
                received = self.sock.recv(65536)
            except TimeoutError:
                if trickle:
                    line += 1
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed meanwhile
                        self.sock.sendall(f"X-Line-{line}: {line}\r\n".encode())
                continue
            except ConnectionResetError:  # closed with a trickled line unread: TCP resets, after the answer
                break
            if not received:
                break
            answer += received
        else:
            return answer + b" (still open)", time.perf_counter() - began
        return answer, time.perf_counter() - began


def assert_408(answer: bytes, seconds: float) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"error": f"the request's headers did not arrive within {seconds:g} s", "code": 408}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("headers"), serve="lenet5-digits", workers="1",
                        header_timeout_s=str(TIMEOUT)) as server:
        yield server


def address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def test_a_connection_that_sends_nothing_gets_408_and_is_closed_once_the_timeout_passes(server):
    began = time.perf_counter()
    with Client(address(server)) as client:
        answer, seconds = client.rest_until_closed(began)
    assert_408(answer, TIMEOUT)
    assert TIMEOUT - 0.05 <= seconds < TIMEOUT + 1.0


def test_a_client_trickling_header_lines_gets_408_and_is_closed_once_the_timeout_passes(server):
    began = time.perf_counter()
    with Client(address(server)) as client:
        client.send(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        answer, seconds = client.rest_until_closed(began, trickle=True)
    assert_408(answer, TIMEOUT)
    assert TIMEOUT - 0.05 <= seconds < TIMEOUT + 1.0


def test_a_kept_alive_client_that_idles_less_than_the_timeout_is_served_and_then_timed_from_its_last_answer(server):
    """The clock restarts at the end of each response (three requests 0.6 s apart outlast one timeout), a request
    whose headers come in pieces within it is served, and a connection left idle is closed one timeout after its
    last response (uvicorn's own keep-alive, 5 s under BentoML, would close it silently, later)."""
    with Client(address(server)) as client:
        client.send(LIVE)
        assert client.response()[0] == 200
        for _ in range(2):
            time.sleep(0.6 * TIMEOUT)
            client.send(LIVE)
            assert client.response()[0] == 200
        time.sleep(0.3 * TIMEOUT)
        head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {len(FORM)}\r\n").encode()
        client.send(head[:20])
        time.sleep(0.2 * TIMEOUT)
        client.send(head[20:] + b"\r\n" + FORM)
        status, body = client.response()
        assert status == 200, body
        assert json.loads(body)["model"] == "lenet5-digits"
        answer, seconds = client.rest_until_closed(time.perf_counter())
    assert_408(answer, TIMEOUT)
    assert TIMEOUT - 0.05 <= seconds < TIMEOUT + 1.0


# The clock over each of uvicorn's HTTP/1.1 protocols (without httptools installed, uvicorn's default is h11's),
# and the protocol the workers serve with.
H11Clock = type("H11Clock", (HeaderClock, H11Protocol), {})
HttptoolsClock = type("HttptoolsClock", (HeaderClock, HttpToolsProtocol), {})
PROTOCOLS = [H11Clock, HttptoolsClock, CoalescingHttpProtocol]


@pytest.fixture
def short_clock(monkeypatch):
    monkeypatch.setattr(HeaderClock, "header_timeout_s", 0.5)
    return 0.5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_trickled_head_gets_408_on_either_protocol(short_clock, protocol):
    with serving(Starlette(), protocol) as port:
        began = time.perf_counter()
        with Client(("127.0.0.1", port)) as client:
            client.send(b"GET / HTTP/1.1\r\n")
            answer, seconds = client.rest_until_closed(began, trickle=True, limit=4)
    assert_408(answer, short_clock)
    assert short_clock - 0.05 <= seconds < short_clock + 0.5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_slower_than_the_timeout_and_one_pipelined_behind_it_are_answered(short_clock, protocol):
    """The clock stops once a request's headers are in: neither the slow handler nor the request that waited
    behind it (pipelined) is cut; it starts again when the last response ends."""

    async def slow(request):
        await asyncio.sleep(2 * short_clock)
        return JSONResponse({"slow": True})

    async def fast(request):
        return Response(b'{"fast":true}', media_type="application/json")

    with serving(Starlette(routes=[Route("/slow", slow), Route("/fast", fast)]), protocol) as port:
        with Client(("127.0.0.1", port)) as client:
            client.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.response() == (200, b'{"slow":true}')
            assert client.response() == (200, b'{"fast":true}')
            answer, seconds = client.rest_until_closed(time.perf_counter(), limit=4)
    assert_408(answer, short_clock)
    assert short_clock - 0.05 <= seconds < short_clock + 0.5


class Transport:
    """What the protocol writes, and nothing sent anywhere."""

    def __init__(self):
        self.written = bytearray()
        self.closed = False

    def write(self, data):
        self.written += data

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


class CountingLoop:
    """The running loop, counting the timers asked of it by who asked."""

    def __init__(self, loop):
        self.loop = loop
        self.timers: list[str] = []

    def call_at(self, when, callback, *args):
        self.timers.append(callback.__name__)
        return self.loop.call_at(when, callback, *args)

    def call_later(self, delay, callback, *args):
        self.timers.append(callback.__name__)
        return self.loop.call_later(delay, callback, *args)

    def __getattr__(self, name):
        return getattr(self.loop, name)


def open_connection(protocol_class) -> tuple[asyncio.Protocol, Transport, CountingLoop]:
    """A connection of ``protocol_class`` opened straight into the protocol, on the running loop, serving ``{}``."""
    app = Response(b"{}", media_type="application/json")
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    loop = CountingLoop(asyncio.get_running_loop())
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport, loop


async def serve_requests(protocol_class, requests: int) -> tuple[asyncio.Protocol, list[str]]:
    """``requests`` requests in turn over one connection: the protocol, and the timers it asked for."""
    protocol, transport, loop = open_connection(protocol_class)
    for _ in range(requests):
        assert protocol.waiting_for_headers()
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not protocol.waiting_for_headers()
        while not protocol.cycle.response_complete:
            await asyncio.sleep(0)
    assert transport.written.count(b"HTTP/1.1 200") == requests and not transport.closed
    protocol.connection_lost(None)
    return protocol, loop.timers


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
def test_a_request_costs_the_clock_no_timer(protocol_class):
    """One timer per connection, armed when it opens; a request only writes the time its response ended (uvicorn's
    own keep-alive arms a timer per response). The time this costs is measured in uvicorn_headers.py's docstring."""
    protocol, timers = asyncio.run(serve_requests(protocol_class, 300))
    assert timers.count("check_header_time") == 1
    assert timers.count("timeout_keep_alive_handler") == 300
    assert protocol.header_timer is None  # cancelled with the connection


@pytest.mark.parametrize("protocol_class", PROTOCOLS)
def test_when_the_timer_fires_after_requests_it_is_set_again_for_the_time_left(short_clock, protocol_class):
    """A connection served since its timer was armed is looked at again one timeout after its last response:
    then, idle, it gets its 408."""

    async def scenario():
        protocol, transport, loop = open_connection(protocol_class)
        await asyncio.sleep(0.6 * short_clock)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while not protocol.cycle.response_complete:
            await asyncio.sleep(0)
        answered = loop.time()
        await asyncio.sleep(0.6 * short_clock)  # the first timer has fired meanwhile
        assert not transport.closed and loop.timers.count("check_header_time") == 2
        assert protocol.header_timer.when() == pytest.approx(answered + short_clock, abs=0.01)
        await asyncio.sleep(0.6 * short_clock)
        assert transport.closed and transport.written.count(b"HTTP/1.1 408") == 1
        protocol.connection_lost(None)

    asyncio.run(scenario())


def test_installing_serves_uvicorn_with_the_clock_and_its_timeout(monkeypatch):
    monkeypatch.setitem(uvicorn_config.HTTP_PROTOCOLS, "auto", UVICORN_DEFAULT)
    monkeypatch.setattr(HeaderClock, "header_timeout_s", HeaderClock.header_timeout_s)
    assert bound_header_time(2.5)
    assert HeaderClock.header_timeout_s == 2.5
    config = uvicorn.Config(Starlette())
    config.load()
    assert config.http_protocol_class is HeaderClockProtocol
    coalesce_responses(4)  # the coalescing protocol keeps the clock, whichever is installed first
    bound_header_time(3)
    config = uvicorn.Config(Starlette())
    config.load()
    assert config.http_protocol_class is CoalescingHttpProtocol and CoalescingHttpProtocol.header_timeout_s == 3


def test_an_untested_uvicorn_keeps_the_clock_off_and_says_so(monkeypatch):
    monkeypatch.setitem(uvicorn_config.HTTP_PROTOCOLS, "auto", UVICORN_DEFAULT)
    monkeypatch.setattr("cnnserve.serving.patches.uvicorn_headers.allowed", lambda library: False)
    assert not bound_header_time(1)
    assert uvicorn_config.HTTP_PROTOCOLS["auto"] == UVICORN_DEFAULT
    assert "no time limit" in patching.WITHOUT["uvicorn"]


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf"])
def test_the_setting_must_be_a_positive_number_of_seconds(raw):
    with pytest.raises(ValueError, match="header_timeout_s"):
        load_settings({"CNNSERVE_HEADER_TIMEOUT_S": raw}, Path(os.devnull))
    assert load_settings({"CNNSERVE_HEADER_TIMEOUT_S": "2.5"}, Path(os.devnull)).header_timeout_s == 2.5
    assert Settings().header_timeout_s == 10
