"""The fast lane in front of BentoML's app, and BentoML's CORS settings read where its own app reads them.

BentoML builds each worker's ASGI app by calling ``to_asgi`` on the service's
class and has no hook to put an app in front of it with its middlewares
skipped; the fast lane (fastlane.py) goes in there.
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


def cors_options() -> dict | None:
    """BentoML's CORS settings (``services.cnnserve.http.cors`` or ``api_server.http.cors``) as Starlette's
    ``CORSMiddleware`` takes them, or None when CORS is off: the fast lane applies them as BentoML does."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    if not BentoMLContainer.http.cors.enabled.get():
        return None
    return BentoMLContainer.access_control_options.get()
