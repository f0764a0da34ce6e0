import pytest

from loadtests.local_server import running_server


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """A server with one worker, so every request meets in the same process and batcher."""
    with running_server(tmp_path_factory.mktemp("server"), workers=1) as server:
        yield server
