"""Errors a client can cause or meet, each with its HTTP status and gRPC code.

Protocol adapters catch ``ServiceError`` and encode it for their wire; nothing
else needs to know which protocol a request came in on.
"""

from __future__ import annotations

from http import HTTPStatus

from ..contract.images import ImageRejected, TooManyPixels, UnsupportedFormat

MESSAGE_LIMIT = 1000  # UTF-8 bytes of an error message; gRPC sends it percent-encoded in a header (8 KiB at most)


class ServiceError(Exception):
    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    grpc_code: str = "INVALID_ARGUMENT"
    # The `outcome` label in the requests metric: success, client_error, unauthorised (401), too_large (413),
    # rejected (503: the queue is full), timed_out (504: waited past the deadline) or server_error.
    outcome: str = "client_error"
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(self, message: str):
        if len(encoded := message.encode()) > MESSAGE_LIMIT:  # a client's 10 KB model name, echoed, passed gRPC's
            message = encoded[: MESSAGE_LIMIT - 3].decode(errors="ignore") + "…"  # 8 KiB metadata limit
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict:
        return {"error": self.message, "code": self.status.value}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class InvalidInput(ServiceError):
    """The request is malformed: not an image, a wrong shape, a bad parameter."""


class UnsupportedImage(InvalidInput):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class UnsupportedEncoding(ServiceError):
    """A compressed request body (``Content-Encoding``): read as it was, it failed as a malformed form or JSON."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class TooLarge(ServiceError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    grpc_code = "INVALID_ARGUMENT"
    outcome = "too_large"


class BodyTimeout(ServiceError):
    """The request's body did not arrive in time (``body_timeout_s``): a stalled or trickling client, whose
    connection is closed after the answer (kept alive, a byte a while would hold it again)."""

    status = HTTPStatus.REQUEST_TIMEOUT

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class ModelNotFound(ServiceError):
    status = HTTPStatus.NOT_FOUND
    grpc_code = "NOT_FOUND"


class ModelUnavailable(ServiceError):
    """The model exists but failed validation or loading; the reason is in the message."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_code = "UNAVAILABLE"
    outcome = "server_error"


class ModelRunFailed(ServiceError):
    """ONNX Runtime failed to run a request's images: the model's fault (an operator that refuses these values) or
    the device's. Only a run of that request alone fails it: the batcher runs a failed batch again in halves
    (``AdaptiveBatcher.settle_failed``), so the rest of the batch is answered."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    grpc_code = "INTERNAL"
    outcome = "server_error"


class DeviceLost(ServiceError):
    """The worker's GPU context is lost (``runtime.cuda_context_lost``): the worker stops and the server starts
    another, so a retry, on another worker or soon, can succeed."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_code = "UNAVAILABLE"
    outcome = "server_error"
    retry_after = 1


class Overloaded(ServiceError):
    """The batcher refused the request: its queue cannot meet the latency budget."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    grpc_code = "RESOURCE_EXHAUSTED"
    outcome = "rejected"
    retry_after = 1


class DeadlineExceeded(ServiceError):
    """The request waited past its deadline and was dropped before running."""

    status = HTTPStatus.GATEWAY_TIMEOUT
    grpc_code = "DEADLINE_EXCEEDED"
    outcome = "timed_out"
    retry_after = 1


# What the server answers for each kind of file the image contract refuses, narrowest first.
IMAGE_REJECTIONS = ((TooManyPixels, TooLarge), (UnsupportedFormat, UnsupportedImage), (ImageRejected, InvalidInput))


def rejected_image(exc: ImageRejected, prefix: str = "") -> ServiceError:
    """The answer to a refused file (413, 415 or 400); ``prefix`` names the image in a request that sent several."""
    answer = next(answer for cause, answer in IMAGE_REJECTIONS if isinstance(exc, cause))
    return answer(f"{prefix}{exc}")


WHOLE_NUMBER_DIGITS = 18  # the most a client's count or version may have: any such number fits 64 bits


def whole_number(value: str, what: str) -> int:
    """A client's count or version: ASCII digits only (``int`` alone would take "+4", " 4", "4_0" and
    non-ASCII digits), and at most ``WHOLE_NUMBER_DIGITS`` of them (past 4,300, ``int`` itself refuses)."""
    if not (value.isascii() and value.isdigit() and len(value) <= WHOLE_NUMBER_DIGITS):
        raise InvalidInput(f"{what} must be a whole number, got {value[:40]!r}")
    return int(value)
