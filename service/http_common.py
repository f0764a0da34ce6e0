"""What every HTTP route shares: the error body, and the per-request timeout header."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from .errors import InvalidInput, ServiceError

TIMEOUT_HEADER = "x-timeout-ms"


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers())


def timeout_ms(headers: Headers) -> float | None:
    """The client's own deadline (``X-Timeout-Ms``), if it set one."""
    value = headers.get(TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"X-Timeout-Ms must be a number of milliseconds, got {value!r}") from None
