"""The prediction routes' direct path from uvicorn to their handlers.

BentoML wraps every HTTP request in its own middleware stack (OpenTelemetry
span, its HTTP metrics, timeout, concurrency, context, two nested Starlette
apps). Measured on LeNet-5 over V2 REST at 64 clients, that stack cost more
CPU than everything else a request needs, inference included (1,130 req/s
through it, 3,365 for a hand-written FastAPI server; docs/architecture.md).
``FastLane`` sits in front of BentoML's app and sends the hot routes (``POST
/predict``, ``POST /predict_batch``, ``POST /v2/models/.../infer`` and the V2
liveness probe) straight to their handlers, behind our own body limit and API
key check; every other path, and every route when ``fast_lane`` is off, goes
through BentoML's stack unchanged. What BentoML promises for every route
when it is configured applies to fast-lane routes too, through BentoML's own
middlewares with BentoML's own options (patches/bentoml_asgi.py): an
OpenTelemetry span per request that honours W3C ``traceparent`` when a tracing
exporter is set, the access log when it is on, and CORS (preflight requests
are OPTIONS and go to BentoML). cnnserve's own metrics (``cnnserve_*``) count
every request either way; BentoML's ``bentoml_service_*`` HTTP metrics do not
see fast-lane requests.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from .auth import ApiKeyMiddleware, KeyCheck
from .body_limit import BodyLimit
from .http_common import header
from .routes import PROTOCOL as REST_PROTOCOL
from .routes import predict, predict_batch
from .v2.rest import PROTOCOL as V2_REST_PROTOCOL
from .v2.rest import infer, server_live

log = logging.getLogger("cnnserve")

REFUSALS = {401: "unauthorised", 413: "too_large", 415: "client_error"}  # what a refusal made in front of a handler is counted as


@dataclass
class FastRoutes:
    """The routes the fast lane answers itself: exact (method, path) pairs and path patterns whose named groups
    are the path parameters, with the protocol label each handler counts its requests (and the refusals made in
    front of it) under. The service's are ``ROUTES``; a benchmark adds its no-op routes to them with ``add``
    (loadtests/bench/noop_routes.py), so production never serves them."""

    exact: dict = field(default_factory=dict)  # (method, path) -> handler
    patterns: list = field(default_factory=list)  # (method, compiled pattern, handler)
    protocols: dict = field(default_factory=dict)  # handler -> protocol label

    def add(self, method: str, handler, path: str | None = None, pattern: str | None = None,
            protocol: str | None = None) -> None:
        if path is not None:
            self.exact[(method, path)] = handler
        else:
            self.patterns.append((method, re.compile(pattern), handler))
        if protocol is not None:
            self.protocols[handler] = protocol

    def find(self, method: str, path: str):
        """The handler and path parameters of a fast-lane route, or (None, None)."""
        handler = self.exact.get((method, path))
        if handler is not None:
            return handler, {}
        for wanted, pattern, handler in self.patterns:
            if method == wanted and (match := pattern.match(path)):
                return handler, {key: value for key, value in match.groupdict().items() if value is not None}
        return None, None


V2_INFER_PATH = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$"
ROUTES = FastRoutes()
ROUTES.add("POST", predict, path="/predict", protocol=REST_PROTOCOL)
ROUTES.add("POST", predict_batch, path="/predict_batch", protocol=REST_PROTOCOL)
ROUTES.add("GET", server_live, path="/v2/health/live")
ROUTES.add("POST", infer, pattern="^" + V2_INFER_PATH, protocol=V2_REST_PROTOCOL)


class FastLane:
    """In front of BentoML's app: hot routes to their handlers, the rest to BentoML.

    A request with a declared body length within the limit, on a server
    without API keys, goes straight to its handler; any other request on a
    fast-lane route (chunked, too large, keys to check) goes through
    ``guarded``, the body limit and API key middlewares, which refuse or pass it.
    """

    def __init__(
        self, app, rest_app, max_body_bytes: int, key_check: KeyCheck, open_paths: tuple[str, ...],
        around: list[tuple[type, dict]] = (), routes: FastRoutes = ROUTES,
    ):
        """``around``: ASGI middlewares (class, options), outermost first, that every fast-lane request passes
        through before the body limit and API key (tracing, access log and CORS as BentoML configures them)."""
        self.app = app  # BentoML's full stack
        self.routes = routes
        self.rest_app = rest_app  # the handlers read the core and the data plane from its state
        self.max_body_bytes = max_body_bytes
        self.keys_needed = key_check.enabled
        self.guarded = BodyLimit(ApiKeyMiddleware(self.handle, key_check, open_paths), max_body_bytes,
                                 clock=lambda: rest_app.state.body_clock)
        self.enter = self.checked
        for middleware, options in reversed(around):
            self.enter = middleware(self.enter, **options)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            handler, path_params = self.routes.find(scope["method"], scope["path"])
            if handler is not None:
                scope["app"], scope["path_params"], scope["cnnserve.handler"] = self.rest_app, path_params, handler
                return await self.enter(scope, receive, send)
        return await self.app(scope, receive, send)

    async def checked(self, scope, receive, send):
        if self.keys_needed or not self.declared_within_limit(scope):
            return await self.counting_refusals(scope, receive, send)
        return await self.handle(scope, receive, send)

    async def counting_refusals(self, scope, receive, send):
        """``guarded``, counting in ``cnnserve_requests_total`` a 401 or 413 its middlewares answer themselves."""
        status = []

        async def watched(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.guarded(scope, receive, watched)
        protocol = self.routes.protocols.get(scope["cnnserve.handler"])
        if protocol and not scope.get("cnnserve.handled") and status and status[0] in REFUSALS:
            self.rest_app.state.core.count_refusal(protocol, REFUSALS[status[0]])

    def declared_within_limit(self, scope) -> bool:
        """A body of declared length within the limit, not compressed (else the body limit answers)."""
        if header(scope, b"content-encoding") is not None:
            return False
        length = header(scope, b"content-length")
        if length is None:
            return scope["method"] == "GET"
        return length.isascii() and length.isdigit() and int(length) <= self.max_body_bytes

    async def handle(self, scope, receive, send):
        scope["cnnserve.handled"] = True
        try:
            response = await scope["cnnserve.handler"](Request(scope, receive))
        except ClientDisconnect:
            return
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = JSONResponse({"error": "internal server error", "code": 500}, status_code=500)
        await response(scope, receive, send)
