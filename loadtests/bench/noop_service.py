"""The service as ``make serve`` runs it, plus the no-op routes (noop_routes.py): what the benchmark starts.

``bentoml serve loadtests.bench.noop_service:CnnServe`` imports this module in every worker, so each
worker's fast lane answers the no-op routes beside the real ones.
"""

from cnnserve.serving.app import CnnServe
from cnnserve.serving.fastlane import ROUTES

from .noop_routes import register

__all__ = ["CnnServe"]

register(ROUTES)
