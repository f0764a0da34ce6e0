"""Optional API keys for every protocol, checked before a request reaches a model.

Keys come from ``api_keys`` (plain keys, e.g. ``CNNSERVE_API_KEYS=k1,k2``, hashed
at start and never logged) and ``api_keys_file`` (one SHA-256 hex digest per
line, ``#`` comments allowed: ``printf %s "$KEY" | sha256sum``). Clients send
``Authorization: Bearer <key>`` (HTTP header or gRPC metadata). A presented key
is hashed and compared with every stored digest in constant time. With no keys
configured, nothing is checked. Health and metrics stay open by default
(``auth_open_paths``; over gRPC, ``grpc.health.v1``, reflection and V2's
ServerLive and ServerReady are always open).

Loading and unloading models (the repository API) takes an admin key (``admin_api_keys``,
``admin_api_keys_file``) whenever any key is configured: a prediction key gets 403 /
PERMISSION_DENIED there. An admin key also predicts. Each load or unload allowed is logged
with the key's id (the first 12 hex digits of its SHA-256), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from pathlib import Path
from typing import Callable

import grpc
from starlette.responses import JSONResponse

from .config import Settings

OPEN_GRPC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.",  # and V2's server health, as over HTTP
                      "/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")
ADMIN_PATH = re.compile(r"^/v2/repository/models/[^/]+/(load|unload)$")
ADMIN_GRPC_METHODS = ("/inference.GRPCInferenceService/RepositoryModelLoad",
                      "/inference.GRPCInferenceService/RepositoryModelUnload")
ADMIN_ONLY = "loading and unloading models needs an admin key (admin_api_keys)"

log = logging.getLogger("cnnserve.auth")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def load_digests(keys: tuple[str, ...], keys_file: str) -> list[bytes]:
    digests = [digest(key) for key in keys]
    if keys_file:
        for number, line in enumerate(Path(keys_file).read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                value = bytes.fromhex(line)
            except ValueError:
                value = b""
            if len(value) != 32:
                raise ValueError(f"{keys_file} line {number}: not a SHA-256 hex digest")
            digests.append(value)
    return digests


def key_check(settings: Settings) -> KeyCheck:
    return KeyCheck(load_digests(settings.api_keys, settings.api_keys_file),
                    load_digests(settings.admin_api_keys, settings.admin_api_keys_file))


class KeyCheck:
    def __init__(self, digests: list[bytes], admin_digests: list[bytes] | None = None):
        self.digests = digests
        self.admin_digests = admin_digests or []

    @property
    def enabled(self) -> bool:
        return bool(self.digests or self.admin_digests)

    def allows(self, authorization: str | None, admin: bool = False) -> bool:
        """True for ``Bearer <key>`` with a known key (an admin key, when ``admin``); every digest is compared, no
        early exit."""
        presented = self.presented(authorization)
        known = self.admin_digests if admin else self.digests + self.admin_digests
        matches = [hmac.compare_digest(presented, k) for k in known]
        return any(matches)

    @staticmethod
    def presented(authorization: str | None) -> bytes:
        scheme, _, key = (authorization or "").partition(" ")
        return digest(key.strip()) if scheme.lower() == "bearer" and key.strip() else b"\0" * 32

    def admitted(self, authorization: str | None, what: str) -> bool:
        """An admin key for ``what`` (a load or an unload), logged with the key's id."""
        if not self.allows(authorization, admin=True):
            return False
        log.info("%s allowed for admin key %s", what, self.presented(authorization).hex()[:12])
        return True


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
        refusal = self.refusal(scope)
        return await (refusal or self.app)(scope, receive, send)

    def refusal(self, scope) -> JSONResponse | None:
        """The 401 or 403 this request gets, or None when it may pass."""
        if scope["type"] != "http" or not self.check.enabled or scope["path"] in self.open_paths:
            return None
        headers = dict(scope["headers"])
        if scope["method"] == "OPTIONS" and b"origin" in headers and b"access-control-request-method" in headers:
            # A browser's CORS preflight never carries credentials (Fetch standard), so it cannot carry a key: the
            # CORS middleware answers it (or, unconfigured, the route's 405), and no handler runs.
            return None
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if not self.check.allows(authorization):
            return unauthorized()
        if ADMIN_PATH.match(scope["path"]) and not self.check.admitted(authorization, f"POST {scope['path']}"):
            return JSONResponse({"error": ADMIN_ONLY, "code": 403}, status_code=403)
        return None


class GrpcKeyInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for any RPC but health (both kinds) and reflection without a valid key; ``refused`` hears the
    method of each RPC refused (to count it)."""

    def __init__(self, check: KeyCheck, refused: Callable[[str], None] = lambda method: None):
        self.check, self.refused = check, refused

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if not self.check.enabled or method.startswith(OPEN_GRPC_SERVICES):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        authorization = metadata.get("authorization")
        if method in ADMIN_GRPC_METHODS and self.check.allows(authorization):
            if self.check.admitted(authorization, method):
                return await continuation(handler_call_details)

            async def deny(request, context):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, ADMIN_ONLY)

            return grpc.unary_unary_rpc_method_handler(deny)
        if self.check.allows(authorization):
            return await continuation(handler_call_details)
        self.refused(method)

        async def refuse(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key: send metadata "
                                "authorization: Bearer <key>")

        return grpc.unary_unary_rpc_method_handler(refuse)
