"""The harness's servers: the benchmark keeps two up at once, and each must count only, and all of, its own
requests."""

from loadtests.local_server import running_server
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
