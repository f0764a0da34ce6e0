"""ASGI middleware that refuses request bodies over the configured size.

A declared ``Content-Length`` over the limit is refused before any byte is
read; a body of undeclared length (chunked) is read up to the limit and
refused as soon as it passes it.
Either way the client gets 413 with a JSON error, and no worker holds more
than the limit in memory. A compressed body (``Content-Encoding`` other than
identity) gets 415 before it is read: read as it was, it failed as a malformed
form or JSON.
"""

from __future__ import annotations

from typing import Callable

from starlette.requests import ClientDisconnect

from .errors import InvalidInput, ServiceError, TooLarge, UnsupportedEncoding
from .http_common import BodyClock, error_response, receive_body


class BodyLimit:
    def __init__(self, app, max_bytes: int, clock: Callable[[], BodyClock | None] = lambda: None):
        """``clock`` gives the worker's body clock where the app behind has none of its own (the fast lane;
        BentoML's stack bounds a request with its own timeout)."""
        self.app = app
        self.max_bytes = max_bytes
        self.clock = clock

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if scope["method"] not in ("GET", "HEAD") and \
                headers.get(b"content-encoding", b"identity").strip().lower() != b"identity":
            encoding = headers[b"content-encoding"].decode("latin-1")[:40]
            refusal = UnsupportedEncoding(f"Content-Encoding {encoding} is not supported: send the body uncompressed")
            return await error_response(refusal)(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await error_response(InvalidInput("invalid Content-Length header"))(scope, receive, send)
            if int(declared) > self.max_bytes:
                message = f"request body is {int(declared)} bytes; the limit is {self.max_bytes}"
                return await error_response(TooLarge(message))(scope, receive, send)
            return await self.app(scope, receive, send)
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return await self.read_chunked(scope, receive, send)
        return await self.app(scope, receive, send)  # no length, not chunked: HTTP/1.1 says no body

    async def read_chunked(self, scope, receive, send):
        """Read a body of undeclared length up to the limit (and within the clock's time, when there is one),
        then replay it to the app."""
        try:
            body = await receive_body(receive, self.clock(), self.max_bytes)
        except ClientDisconnect:
            return
        except ServiceError as exc:  # TooLarge or BodyTimeout
            return await error_response(exc)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
