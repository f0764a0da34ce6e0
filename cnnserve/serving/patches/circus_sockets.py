"""One HTTP listening socket per worker (SO_REUSEPORT), so the kernel spreads connections evenly.

By default BentoML's process manager (circus) binds one socket and every
worker accepts from it. The worker that wakes first accepts every connection
waiting (uvloop accepts until the queue is empty), so a burst of keep-alive
clients often lands on one worker, which then does all the work on its own
cores while the others idle. Measured with 64 wrk connections to LeNet-5
over V2 REST: a 64/0 split about one run in four, and 6,400 req/s instead of
12,000. With a socket of its own per worker, all bound with SO_REUSEPORT, the
kernel hashes every new connection to one of them, as it already does for
the workers' gRPC servers.

BentoML has no option for it, so it takes two steps:
- in the arbiter (``spread_connections``, called when it imports the service,
  before it creates the socket): the API server's socket is marked
  ``so_reuseport``, which makes circus leave it unbound, and its address is
  handed to the workers in an environment variable. SO_REUSEPORT would let a
  second server bind the same port silently and share its traffic, so the
  port is checked first: a port in use is refused, as it is without this;
- in each worker (``listen_on_own_socket``, before uvicorn wraps the
  inherited descriptor): a new socket is bound to that address and put in
  place of the inherited one, under the same descriptor number.
"""

from __future__ import annotations

import functools
import os
import socket
import sys

from circus.sockets import CircusSocket

API_SERVER_SOCKET = "_bento_api_server"  # the name BentoML gives the HTTP socket
ADDRESS_VARIABLE = "CNNSERVE_WORKER_LISTEN"  # "family host port", set by the arbiter for its workers


class PortInUse(OSError):
    pass


def reuseport_socket(family: int, host: str, port: int, probe: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port); with SO_REUSEPORT unless it is only a ``probe``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if not probe:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def spread_connections() -> None:
    """In the arbiter: leave the API server's socket to the workers, each binding its own."""
    original = CircusSocket.__init__
    if getattr(original, "spreads_connections", False):
        return

    @functools.wraps(original)
    def init(self, *args, **kwargs):
        if kwargs.get("name") == API_SERVER_SOCKET and kwargs.get("path") is None and not args:
            family, host, port = kwargs.get("family", socket.AF_INET), kwargs["host"], int(kwargs["port"])
            reuseport_socket(family, host, port, probe=True).close()  # fails if anything holds the port
            os.environ[ADDRESS_VARIABLE] = f"{int(family)} {host} {port}"
            kwargs["so_reuseport"] = True
        original(self, *args, **kwargs)

    init.spreads_connections = True
    CircusSocket.__init__ = init


def listen_on_own_socket(argv: list[str] = sys.argv) -> bool:
    """In a worker: replace the inherited HTTP socket (``--fd N``) by one of its own; whether it did."""
    address = os.environ.get(ADDRESS_VARIABLE)
    if not address or "--fd" not in argv:
        return False
    family, host, port = address.split(" ")
    inherited = int(argv[argv.index("--fd") + 1])
    with reuseport_socket(int(family), host, int(port)) as own:
        os.dup2(own.fileno(), inherited)
    return True
