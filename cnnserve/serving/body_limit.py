"""ASGI middleware that refuses request bodies over the configured size.

A declared ``Content-Length`` over the limit is refused before any byte is
read; a body of undeclared length (chunked) is read up to the limit and
refused as soon as it passes it.
Either way the client gets 413 with a JSON error, and no worker holds more
than the limit in memory.
"""

from __future__ import annotations

from starlette.responses import JSONResponse


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def refusal(self, detail: str) -> JSONResponse:
        return JSONResponse({"error": detail, "code": 413}, status_code=413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await JSONResponse({"error": "invalid Content-Length header", "code": 400}, 400)(
                    scope, receive, send
                )
            if int(declared) > self.max_bytes:
                message = f"request body is {int(declared)} bytes; the limit is {self.max_bytes}"
                return await self.refusal(message)(scope, receive, send)
            return await self.app(scope, receive, send)
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return await self.read_chunked(scope, receive, send)
        return await self.app(scope, receive, send)  # no length, not chunked: HTTP/1.1 says no body

    async def read_chunked(self, scope, receive, send):
        """Read a body of undeclared length up to the limit, then replay it to the app."""
        chunks, received, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                return await self.refusal(f"request body exceeds the limit of {self.max_bytes} bytes")(
                    scope, receive, send
                )
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)
