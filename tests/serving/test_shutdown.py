"""At SIGTERM a worker shuts the shared listening socket, so the kernel refuses
new connections instead of queueing them for nobody; a worker that stops alone
(its GPU lost) leaves a socket it shares with the others listening."""

import os
import signal
import socket

import pytest

from cnnserve.serving import shutdown
from cnnserve.serving.shutdown import listening_descriptor, refuse_new_connections, sigterm_handler, stop_this_worker


def test_the_descriptor_comes_from_bentomls_worker_arguments():
    assert listening_descriptor(["worker", "cnnserve.serving.app:CnnServe", "--fd", "7", "--worker-id", "1"]) == 7
    assert listening_descriptor(["python", "-m", "pytest"]) is None


def test_a_shut_listening_socket_refuses_connections():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = listener.getsockname()
        socket.create_connection(address, timeout=5).close()
        refuse_new_connections(listener.fileno())
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5)


@pytest.mark.parametrize("own_socket, stopping_alone, refused", [
    (False, False, True),  # the whole server stops: its shared socket refuses
    (True, True, True),  # this worker stops alone on its own socket: the kernel sends the others' connections on
    (False, True, False),  # it stops alone on the socket every worker shares: the others keep listening
])
def test_a_worker_stopping_alone_leaves_a_socket_it_shares_listening(monkeypatch, own_socket, stopping_alone, refused):
    monkeypatch.setattr(shutdown.WORKER, "own_socket", own_socket)
    monkeypatch.setattr(shutdown.WORKER, "stopping_alone", stopping_alone)
    servers_handler = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        sigterm_handler(listener.fileno(), lambda signum, frame: servers_handler.append(signum))(signal.SIGTERM, None)
        assert servers_handler == [signal.SIGTERM]
        if refused:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(listener.getsockname(), timeout=5)
        else:
            socket.create_connection(listener.getsockname(), timeout=5).close()


def test_a_worker_stops_alone_by_sending_itself_sigterm(monkeypatch):
    sent = []
    monkeypatch.setattr(shutdown.WORKER, "stopping_alone", False)
    monkeypatch.setattr(shutdown.os, "kill", lambda pid, signum: sent.append((pid, signum)))
    stop_this_worker()
    assert sent == [(os.getpid(), signal.SIGTERM)] and shutdown.WORKER.stopping_alone
