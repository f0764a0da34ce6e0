"""The fast lane in front of BentoML's app, and BentoML's own middlewares for it as BentoML configures them.

BentoML builds each worker's ASGI app by calling ``to_asgi`` on the service's
class and has no hook to put an app in front of it with its middlewares
skipped; the fast lane (fastlane.py) goes in there. What BentoML promises
every route (tracing, access log, CORS) is then kept by putting BentoML's own
middleware classes, with the options its app reads from its configuration
container, around the fast lane's routes (``promised_middlewares``).
"""

from __future__ import annotations

from typing import Callable

from . import allowed


def wrap_service_app(service, wrap: Callable) -> bool:
    """Have BentoML hand ``service``'s ASGI app through ``wrap`` (other services are left alone); whether it
    does (not on an untested BentoML)."""
    if not allowed("bentoml"):
        return False
    service_class = type(service)
    original = service_class.to_asgi
    if getattr(original, "wrapped_for", None) is service:
        return True

    def to_asgi(this, is_main: bool = True):
        app = original(this, is_main)
        return wrap(app) if this is service else app

    to_asgi.wrapped_for = service
    service_class.to_asgi = to_asgi
    return True


def promised_middlewares() -> list[tuple[type, dict]]:
    """BentoML's middlewares that its configuration turns on, outermost first, with the options its app gives
    them (``_bentoml_impl/server/app.py``): an OpenTelemetry span per request when a tracing exporter is set
    (BentoML's sampler follows an incoming ``traceparent``), the access log when enabled, CORS when enabled."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    middlewares = []
    if BentoMLContainer.tracing.exporter_type.get():
        from bentoml._internal.context import trace_context
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        def server_request_hook(span, _scope) -> None:  # what BentoML's own hook does: the request id in logs
            if span.context is not None:
                trace_context.request_id = span.context.span_id

        middlewares.append((OpenTelemetryMiddleware, {
            "excluded_urls": BentoMLContainer.tracing_excluded_urls.get(),
            "default_span_details": None,
            "server_request_hook": server_request_hook,
            "client_request_hook": None,
            "tracer_provider": BentoMLContainer.tracer_provider.get(),
        }))
    access_log = BentoMLContainer.api_server_config.logging.access
    if access_log.enabled.get():
        from bentoml._internal.server.http.access import AccessLogMiddleware

        middlewares.append((AccessLogMiddleware, {
            "has_request_content_length": access_log.request_content_length.get(),
            "has_request_content_type": access_log.request_content_type.get(),
            "has_response_content_length": access_log.response_content_length.get(),
            "has_response_content_type": access_log.response_content_type.get(),
            "skip_paths": access_log.skip_paths.get(),
        }))
    if BentoMLContainer.http.cors.enabled.get():
        from starlette.middleware.cors import CORSMiddleware

        middlewares.append((CORSMiddleware, BentoMLContainer.access_control_options.get()))
    return middlewares
