"""The harness's servers: the benchmark keeps two up at once, and each must count only, and all of, its own
requests."""

import socket

from loadtests.local_server import ephemeral_ports, free_port, running_server
from tests.serving.helpers import metric_total, v2_grey

MODEL = "lenet5-digits"


def test_two_servers_started_from_one_folder_each_keep_their_own_metrics(tmp_path):
    with running_server(tmp_path, serve=MODEL, workers="1") as first, \
            running_server(tmp_path, serve=MODEL, workers="1") as second:
        for _ in range(3):
            assert first.client.post(f"/v2/models/{MODEL}/infer", json=v2_grey([1, 1, 32, 32])).status_code == 200
        counted = {server: metric_total(server.metrics(), "cnnserve_requests_total", model=MODEL)
                   for server in (first, second)}
    assert counted == {first: 3, second: 0}


def test_a_free_port_is_one_no_outgoing_connection_can_take_before_the_server_binds_it():
    low, _ = ephemeral_ports()
    ports = [free_port() for _ in range(20)]
    assert all(port < low for port in ports)  # the kernel gives outgoing connections ports from low up
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))  # and it was free
    assert free_port(avoid=frozenset(range(10_000, low))) >= low  # none left to try: the kernel's choice
