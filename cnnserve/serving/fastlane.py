"""The prediction routes' direct path from uvicorn to their handlers.

BentoML wraps every HTTP request in its own middleware stack (OpenTelemetry
span, its HTTP metrics, timeout, concurrency, context, two nested Starlette
apps). Measured on LeNet-5 over V2 REST at 64 clients, that stack cost more
CPU than everything else a request needs, inference included (1,130 req/s
through it, 3,365 for a hand-written FastAPI server; docs/architecture.md).
``FastLane`` sits in front of BentoML's app and sends the hot routes (``POST
/predict``, ``POST /predict_batch``, ``POST /v2/models/.../infer`` and the V2
liveness probe) straight to their handlers, behind our own body limit and API
key check, and so the V2 routes whose path holds a model's name (metadata,
readiness, configuration, statistics, repository load and unload): BentoML's
HTTP metrics label each request by its raw path, so every made-up name added
series to ``/metrics`` for good. For the same reason a path no route has, or a
fast-lane path asked with another method, is answered here (404, 405). Every
other path, and every route when ``fast_lane`` is off, goes through BentoML's
stack unchanged. What BentoML promises for every route
when it is configured applies to fast-lane routes too, through BentoML's own
middlewares with BentoML's own options (patches/bentoml_asgi.py): an
OpenTelemetry span per request that honours W3C ``traceparent`` when a tracing
exporter is set, the access log when it is on, and CORS (a preflight, an
OPTIONS request, is answered by the CORS middleware in front of a fast-lane
path, by BentoML's elsewhere). cnnserve's own metrics (``cnnserve_*``) count
every request either way; BentoML's ``bentoml_service_*`` HTTP metrics do not
see fast-lane requests.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Mount

from .auth import ApiKeyMiddleware, KeyCheck
from .body_limit import BodyLimit
from .http_common import header
from .routes import PROTOCOL as REST_PROTOCOL
from .routes import predict, predict_batch, route_error
from .v2.rest import PROTOCOL as V2_REST_PROTOCOL
from .v2.rest import (
    infer,
    model_config,
    model_metadata,
    model_ready,
    repository_load,
    repository_unload,
    server_live,
    statistics,
)

log = logging.getLogger("cnnserve")

# What a refusal made in front of a handler is counted as
REFUSALS = {401: "unauthorised", 413: "too_large", 415: "client_error"}


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
        """The handler and path parameters of a fast-lane route, or (None, None). HEAD is served as GET (uvicorn
        sends no body), as Starlette's routes do."""
        method = "GET" if method == "HEAD" else method
        handler = self.exact.get((method, path))
        if handler is not None:
            return handler, {}
        for wanted, pattern, handler in self.patterns:
            if method == wanted and (match := pattern.match(path)):
                return handler, {key: value for key, value in match.groupdict().items() if value is not None}
        return None, None

    def methods_for(self, path: str) -> list[str]:
        """The methods the fast lane answers on ``path``: a request with another gets 405 naming them."""
        methods = {method for method, exact in self.exact if exact == path} | {
            method for method, pattern, _ in self.patterns if pattern.match(path)}
        return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


V2_MODEL_PATH = r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
V2_INFER_PATH = V2_MODEL_PATH.removeprefix("^") + "/infer$"
ROUTES = FastRoutes()
ROUTES.add("POST", predict, path="/predict", protocol=REST_PROTOCOL)
ROUTES.add("POST", predict_batch, path="/predict_batch", protocol=REST_PROTOCOL)
ROUTES.add("GET", server_live, path="/v2/health/live")
ROUTES.add("POST", infer, pattern="^" + V2_INFER_PATH, protocol=V2_REST_PROTOCOL)
# The routes whose path holds a name the client chooses, here rather than through BentoML's stack, whose HTTP
# metrics label each request by its raw path: 50 requests for made-up models' readiness added 2.2 MB of series to
# /metrics, for good. (/v2/models/stats first: the model routes' pattern would take it for a model.)
ROUTES.add("GET", statistics, path="/v2/models/stats")
for suffix, handler in (("", model_metadata), ("/ready", model_ready), ("/config", model_config),
                        ("/stats", statistics)):
    ROUTES.add("GET", handler, pattern=f"{V2_MODEL_PATH}{suffix}$")
ROUTES.add("POST", repository_load, pattern=r"^/v2/repository/models/(?P<name>[^/]+)/load$")
ROUTES.add("POST", repository_unload, pattern=r"^/v2/repository/models/(?P<name>[^/]+)/unload$")


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
        # With keys, a request without one is refused here too when it would go to BentoML's stack, so the promised
        # middlewares (CORS) see the 401: BentoML's own runs inside the key check, and a browser could not read it.
        # A path no route has is answered 401 without a key, as before: unknown callers learn no paths.
        self.keys = ApiKeyMiddleware(self.no_route, key_check, open_paths)
        self.enter, self.refuse = self.checked, self.keys
        for middleware, options in reversed(around):
            self.enter, self.refuse = middleware(self.enter, **options), middleware(self.refuse, **options)
        # Every route a request may reach past the fast lane: the service's, and BentoML's own (not the mount of
        # the service's app at "/", which takes any path)
        self.other_routes = [*rest_app.routes, *(r for r in getattr(app, "routes", ()) if not isinstance(r, Mount))]

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            handler, path_params = self.routes.find(scope["method"], scope["path"])
            if handler is not None:
                scope["app"], scope["path_params"], scope["cnnserve.handler"] = self.rest_app, path_params, handler
                return await self.enter(scope, receive, send)
            # A path no route has, or a fast-lane one with another method, is answered here (after CORS, which
            # answers a preflight): BentoML's HTTP metrics would keep a series for each path anyone makes up
            if self.routes.methods_for(scope["path"]) or self.keys.refusal(scope) or not any(
                    route.matches(scope)[0] != Match.NONE for route in self.other_routes):
                return await self.refuse(scope, receive, send)
        return await self.app(scope, receive, send)

    async def no_route(self, scope, receive, send):
        """405 naming the fast lane's methods for the path, or 404, as JSON."""
        allowed = self.routes.methods_for(scope["path"])
        refusal = HTTPException(405, headers={"Allow": ", ".join(allowed)}) if allowed else HTTPException(404)
        await (await route_error(Request(scope, receive), refusal))(scope, receive, send)

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
