"""Each worker listens on the HTTP port with a socket of its own (SO_REUSEPORT),
so the kernel spreads connections over the workers; a port already in use is
still refused rather than silently shared."""

import os
import socket
import time

import psutil
import pytest
from circus.sockets import CircusSocket

from cnnserve.serving.patches.circus_sockets import (
    ADDRESS_VARIABLE,
    API_SERVER_SOCKET,
    PortInUse,
    listen_on_own_socket,
    reuseport_socket,
    spread_connections,
)


def listening_pids(port: int) -> list[int]:
    return sorted(c.pid for c in psutil.net_connections(kind="tcp")
                  if c.status == psutil.CONN_LISTEN and c.laddr.port == port)


def test_every_worker_of_a_running_server_has_its_own_listening_socket(server):
    """A worker listens once its models are loaded; until then the kernel sends it nothing."""
    port = int(server.url.rsplit(":", 1)[1])
    workers = sorted(p.pid for p in psutil.Process(server.process.pid).children())
    assert len(workers) >= 2
    deadline = time.monotonic() + 120
    while listening_pids(port) != workers and time.monotonic() < deadline:
        time.sleep(0.5)
    assert listening_pids(port) == workers


@pytest.fixture
def patched_circus(monkeypatch):
    monkeypatch.setattr(CircusSocket, "__init__", CircusSocket.__init__)  # restored after the test
    monkeypatch.delenv(ADDRESS_VARIABLE, raising=False)
    spread_connections()


def test_the_api_socket_is_left_to_the_workers_and_its_address_handed_down(patched_circus):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    sock = CircusSocket(name=API_SERVER_SOCKET, host="127.0.0.1", port=port, family=socket.AF_INET, backlog=16)
    with sock:
        assert sock.so_reuseport  # circus binds nothing for it in the arbiter
        assert os.environ[ADDRESS_VARIABLE] == f"{int(socket.AF_INET)} 127.0.0.1 {port}"
    other = CircusSocket(name="some_other_socket", host="127.0.0.1", port=port)
    with other:
        assert not other.so_reuseport


def test_a_port_in_use_is_refused_before_any_worker_starts(patched_circus):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(PortInUse, match="cannot listen on 127.0.0.1"):
            CircusSocket(name=API_SERVER_SOCKET, host="127.0.0.1", port=taken.getsockname()[1])


def test_a_second_server_cannot_join_the_workers_sockets():
    with reuseport_socket(socket.AF_INET, "127.0.0.1", 0) as worker:
        worker.listen()
        port = worker.getsockname()[1]
        with reuseport_socket(socket.AF_INET, "127.0.0.1", port) as another_worker:
            another_worker.listen()
            with pytest.raises(PortInUse):
                reuseport_socket(socket.AF_INET, "127.0.0.1", port, probe=True)


def test_a_worker_puts_its_own_socket_in_place_of_the_inherited_one(monkeypatch):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    inherited = socket.socket()  # what circus hands a worker: unbound, as the arbiter never binds it
    monkeypatch.setenv(ADDRESS_VARIABLE, f"{int(socket.AF_INET)} 127.0.0.1 {port}")
    with inherited:
        assert listen_on_own_socket(["worker", "--fd", str(inherited.fileno())])
        assert inherited.getsockname() == ("127.0.0.1", port)
        assert inherited.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def test_without_the_arbiters_address_a_worker_keeps_its_socket(monkeypatch):
    monkeypatch.delenv(ADDRESS_VARIABLE, raising=False)
    assert not listen_on_own_socket(["worker", "--fd", "3"])
