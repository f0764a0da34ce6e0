"""Stop taking connections the moment a worker is told to stop.

BentoML's arbiter opens the listening socket and hands its descriptor to every
worker (``--fd N``). On SIGTERM, uvicorn stops calling accept() and finishes
the requests it has, but the arbiter keeps the socket open until it exits, so
the kernel would go on completing handshakes that no worker reads, and reset
them when the arbiter finally closes it. Shutting the socket down for reading
at SIGTERM makes the kernel refuse new connections at once instead.
"""

from __future__ import annotations

import os
import signal
import socket
import sys


def listening_descriptor(argv: list[str]) -> int | None:
    """The ``--fd`` BentoML passed to this worker, if any."""
    for index, arg in enumerate(argv[:-1]):
        if arg == "--fd":
            return int(argv[index + 1])
    return None


def refuse_new_connections(descriptor: int) -> None:
    try:
        with socket.socket(fileno=os.dup(descriptor)) as listener:
            listener.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # already shut down by another worker, or not a socket


def stop_listening_on_sigterm() -> None:
    """Chain a handler in front of the server's own SIGTERM handler (call from the worker's startup)."""
    descriptor = listening_descriptor(sys.argv)
    if descriptor is None:
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        refuse_new_connections(descriptor)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)
