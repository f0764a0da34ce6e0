"""Whether an HTTP request is alone in its worker: the signal that lets a lone
request skip the batcher's queue (``AdaptiveBatcher.run_alone``).

uvicorn creates a request's task as soon as it has read the request's head and
keeps every running request task of the worker in one set. So while a handler
runs, that set also holds the requests read in the same pass of the event loop
whose handlers have yet to take a step: requests that a count kept by the
handlers themselves would miss, and that must share a batch with this one.
gRPC requests are not in it; they always go through the queue.
"""

from __future__ import annotations

_request_tasks: set | None = None


def watch(request_tasks: set) -> None:
    """Called by the worker's HTTP protocol (cnnserve/serving/patches/uvicorn_writes.py) with uvicorn's set of request tasks."""
    global _request_tasks
    _request_tasks = request_tasks


def lone_http_request() -> bool:
    """True while the worker serves exactly one HTTP request, the caller's; False when it cannot tell."""
    return _request_tasks is not None and len(_request_tasks) == 1
