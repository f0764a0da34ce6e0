"""Optional API keys for every protocol, checked before a request reaches a model.

Keys come from ``api_keys`` (plain keys, e.g. ``CNNSERVE_API_KEYS=k1,k2``, hashed
at start and never logged) and ``api_keys_file`` (one SHA-256 hex digest per
line, ``#`` comments allowed: ``printf %s "$KEY" | sha256sum``). Clients send
``Authorization: Bearer <key>`` (HTTP header or gRPC metadata). A presented key
is hashed and compared with every stored digest in constant time. With no keys
configured, nothing is checked. Health and metrics stay open by default
(``auth_open_paths``; gRPC health and reflection are always open).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Callable

import grpc
from starlette.responses import JSONResponse

from .config import Settings

OPEN_GRPC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def load_digests(settings: Settings) -> list[bytes]:
    digests = [digest(key) for key in settings.api_keys]
    if settings.api_keys_file:
        for number, line in enumerate(Path(settings.api_keys_file).read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                value = bytes.fromhex(line)
            except ValueError:
                value = b""
            if len(value) != 32:
                raise ValueError(f"{settings.api_keys_file} line {number}: not a SHA-256 hex digest")
            digests.append(value)
    return digests


class KeyCheck:
    def __init__(self, digests: list[bytes]):
        self.digests = digests

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def allows(self, authorization: str | None) -> bool:
        """True for ``Bearer <key>`` with a known key; every digest is compared, no early exit."""
        scheme, _, key = (authorization or "").partition(" ")
        presented = digest(key.strip()) if scheme.lower() == "bearer" and key.strip() else b"\0" * 32
        matches = [hmac.compare_digest(presented, known) for known in self.digests]
        return any(matches)


def unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "missing or invalid API key: send Authorization: Bearer <key>", "code": 401},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


class ApiKeyMiddleware:
    """ASGI middleware: 401 for any HTTP path outside ``open_paths`` without a valid key."""

    def __init__(self, app, check: KeyCheck, open_paths: tuple[str, ...]):
        self.app = app
        self.check = check
        self.open_paths = set(open_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.check.enabled or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if not self.check.allows(authorization):
            return await unauthorized()(scope, receive, send)
        return await self.app(scope, receive, send)


class GrpcKeyInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for any RPC but health and reflection without a valid key; ``refused`` hears the
    method of each RPC refused (to count it)."""

    def __init__(self, check: KeyCheck, refused: Callable[[str], None] = lambda method: None):
        self.check, self.refused = check, refused

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if not self.check.enabled or method.startswith(OPEN_GRPC_SERVICES):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        if self.check.allows(metadata.get("authorization")):
            return await continuation(handler_call_details)
        self.refused(method)

        async def refuse(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key: send metadata "
                                "authorization: Bearer <key>")

        return grpc.unary_unary_rpc_method_handler(refuse)
