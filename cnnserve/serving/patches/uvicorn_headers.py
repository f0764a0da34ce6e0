"""A client has ``header_timeout_s`` to send a request's headers; beyond it, 408 and the connection closed.

uvicorn bounds none of it. Its only clock, ``timeout_keep_alive`` (5 s under
BentoML), is armed when a response ends and cancelled by the first byte that
arrives after it: a new connection that sends nothing never has it armed, and
a client that sends one header line at a time stops it with its first line.
Either holds its connection, a file descriptor and a protocol object for good
(audit: open at 150 s; a header line every 10 s unanswered at 290 s), so a
few hundred such clients exhaust a worker (slowloris). The request body has
its own clock (``body_timeout_s``, http_common.BodyClock) once the headers
are in; this one covers what comes before: from the connection's opening, or
from the end of the previous response on a kept-alive connection, to the end
of the request's headers.

``HeaderClockProtocol`` is uvicorn's default HTTP protocol (httptools, else
h11) with one timer per connection, armed when the connection opens and set
again only when it fires. A request costs it one write of the loop's clock
when its response ends (waiting begins), nothing when the next request's head
is read (uvicorn then makes a new request cycle, which the timer sees). When
the timer fires it looks: still waiting past the time, the client gets a 408
with a JSON body and ``Connection: close``, and the connection is closed;
otherwise it is set again for the time left (a full period while a request
runs). Measured in process on uvloop, the protocol fed one request after
another on one connection (no sockets, medians of 15 runs of 3,000): over
httptools 13.3 µs per request against uvicorn's own 12.7 (a timer armed at
each response's end and cancelled at the next head instead: 13.9), over h11
54.1 against 53.9. An idle kept-alive connection is closed silently by
uvicorn's own keep-alive first wherever that is the shorter.
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from ..config import Settings
from . import allowed

log = logging.getLogger("cnnserve")

UVICORN_DEFAULT = "uvicorn.protocols.http.auto:AutoHTTPProtocol"  # HTTP_PROTOCOLS["auto"] as uvicorn ships it


def refusal(seconds: float, default_headers: list[tuple[bytes, bytes]] = ()) -> bytes:
    """The whole 408 answer: uvicorn's default headers (the date) first, as its own 400 does."""
    body = json.dumps({"error": f"the request's headers did not arrive within {seconds:g} s",
                       "code": 408}).encode()
    head = [b"HTTP/1.1 408 Request Timeout\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
             b"\r\nconnection: close\r\n\r\n"]
    return b"".join(head) + body


class HeaderClock:
    """The clock, for either of uvicorn's HTTP/1.1 protocols (httptools' and h11's: uvicorn's default is the
    first where httptools is installed, which uvicorn's ``standard`` extra brings, and h11's otherwise)."""

    header_timeout_s: float = Settings.header_timeout_s  # set on HeaderClock by bound_header_time, from the settings
    # Since when this connection has waited for a request's head, and the request it follows (None: the first). A
    # head read since then shows as a new ``self.cycle``, which uvicorn makes for each request.
    waiting_since: float | None = None
    waiting_after: object = None
    header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.waiting_since = self.loop.time()
        self.header_timer = self.loop.call_at(self.waiting_since + self.header_timeout_s, self.check_header_time)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle  # uvicorn may have started a pipelined request whose head had already arrived
        self.waiting_since = self.loop.time() if cycle.response_complete else None
        self.waiting_after = cycle

    def connection_lost(self, exc: Exception | None) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        super().connection_lost(exc)

    def waiting_for_headers(self) -> bool:
        """Whether the connection still waits for a request's head (none has been read since it began to)."""
        return self.waiting_since is not None and self.cycle is self.waiting_after

    def check_header_time(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or self not in self.connections:  # closing, or upgraded to a WebSocket
            return
        now = self.loop.time()
        if not self.waiting_for_headers():  # a request under way: look again a period later
            self.header_timer = self.loop.call_at(now + self.header_timeout_s, self.check_header_time)
            return
        if now < self.waiting_since + self.header_timeout_s:
            self.header_timer = self.loop.call_at(self.waiting_since + self.header_timeout_s, self.check_header_time)
            return
        # Waiting, so no response is under way (one stamps the time only once complete): the 408 goes out whole.
        self.transport.write(refusal(self.header_timeout_s, self.server_state.default_headers))
        self.transport.close()


class HeaderClockProtocol(HeaderClock, AutoHTTPProtocol):
    """uvicorn's default HTTP protocol, its clients held to ``header_timeout_s`` for each request's headers."""


def bound_header_time(seconds: float) -> bool:
    """In a worker, before uvicorn starts: hold every HTTP client to ``seconds`` (``header_timeout_s``) for each
    request's headers, by serving HTTP with ``HeaderClockProtocol``, unless a protocol derived from it (the
    coalescing one, uvicorn_writes.py) is already installed; whether it is."""
    if not allowed("uvicorn"):
        return False
    try:
        from uvicorn.config import HTTP_PROTOCOLS
    except ImportError:
        log.warning("this uvicorn has no HTTP protocol table; a client's request headers have no time limit")
        return False
    HeaderClock.header_timeout_s = float(seconds)
    if HTTP_PROTOCOLS.get("auto") == UVICORN_DEFAULT:  # else ours already: the coalescing one derives from it
        HTTP_PROTOCOLS["auto"] = f"{__name__}:{HeaderClockProtocol.__name__}"
    return True
