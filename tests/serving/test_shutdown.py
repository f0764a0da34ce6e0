"""At SIGTERM a worker shuts the shared listening socket, so the kernel refuses
new connections instead of queueing them for nobody."""

import socket

import pytest

from cnnserve.serving.shutdown import listening_descriptor, refuse_new_connections


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
