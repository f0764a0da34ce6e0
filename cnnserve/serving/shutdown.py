"""Stop taking connections the moment a worker is told to stop.

BentoML's arbiter opens the listening socket and hands its descriptor to every
worker (``--fd N``). On SIGTERM, uvicorn stops calling accept() and finishes
the requests it has, but the arbiter keeps the socket open until it exits, so
the kernel would go on completing handshakes that no worker reads, and reset
them when the arbiter finally closes it. Shutting the socket down for reading
at SIGTERM makes the kernel refuse new connections at once instead.

A worker can also stop alone (``stop_this_worker``: its GPU's CUDA context is lost, host.py), for the server to
start another. It then shuts the socket down only if it is its own (``listening_alone``): one shared with the other
workers would refuse their connections too, until the new worker listened again.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from types import SimpleNamespace

# whether this worker listens on a socket of its own (patches/circus_sockets.py), and whether it stops alone
WORKER = SimpleNamespace(own_socket=False, stopping_alone=False)


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


def listening_alone() -> None:
    """This worker listens on a socket of its own: shutting it down touches no other worker's connections."""
    WORKER.own_socket = True


def stop_this_worker() -> None:
    """Stop this worker alone, as SIGTERM does (it answers what it accepted, then exits), for the server's arbiter
    to start another in its place."""
    WORKER.stopping_alone = True
    os.kill(os.getpid(), signal.SIGTERM)


def sigterm_handler(descriptor: int, previous):
    """Refuse new connections on ``descriptor`` (unless this worker stops alone on a socket it shares), then
    ``previous``: the server's own handler."""

    def handler(signum, frame):
        if WORKER.own_socket or not WORKER.stopping_alone:
            refuse_new_connections(descriptor)
        if callable(previous):
            previous(signum, frame)

    return handler


def stop_listening_on_sigterm() -> None:
    """Chain a handler in front of the server's own SIGTERM handler (call from the worker's startup)."""
    descriptor = listening_descriptor(sys.argv)
    if descriptor is not None:
        signal.signal(signal.SIGTERM, sigterm_handler(descriptor, signal.getsignal(signal.SIGTERM)))
