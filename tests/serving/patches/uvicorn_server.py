"""A real uvicorn in a thread, for the tests of the uvicorn patches."""

import contextlib
import threading
import time

import uvicorn

from cnnserve.serving.patches.uvicorn_writes import CoalescingHttpProtocol
from loadtests.local_server import free_port


@contextlib.contextmanager
def serving(app, protocol=CoalescingHttpProtocol):
    """``app`` on 127.0.0.1 over ``protocol`` (the coalescing one by default), in a thread; yields its port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
