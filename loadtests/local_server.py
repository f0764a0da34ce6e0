"""Start the real service (``bentoml serve``) on 127.0.0.1 for a test or a load run, and stop it.

Each server gets a free port, its own BENTOML_HOME and configuration through
CNNSERVE_* variables, and is stopped with its whole process group, so no
worker outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
BENTOML = [sys.executable, "-m", "bentoml"]  # also where the bentoml script is not beside python (pip --target)
START_TIMEOUT = 180
MAX_BODY_BYTES = 2 * 1024 * 1024  # the shared test server's limit: small, so cheap to test


def free_port(avoid: frozenset[int] = frozenset()) -> int:
    """A port free now, below the kernel's ephemeral range: a port the kernel hands out (bind to 0) can be taken
    by any outgoing connection before the server binds it seconds later, which failed a server's start with
    "Address already in use" once in about five full test runs."""
    lowest = ephemeral_ports()[0]
    for port in random.sample(range(10_000, lowest), min(200, lowest - 10_000)):
        if port in avoid:  # one chosen already for the same server
            continue
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    with socket.socket() as s:  # every one tried is taken: the kernel's choice, as before
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks outgoing connections' ports from (Linux's default where it cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    return 32768, 60999


class Server:
    def __init__(self, url: str, grpc_address: str, process: subprocess.Popen, log_path: Path):
        self.url = url
        self.grpc_address = grpc_address
        self.process = process
        self.log_path = log_path
        self.client = httpx.Client(base_url=url, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return self.client.get("/metrics").text


def wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"server not ready after {timeout} s:\n{log_path.read_text()[-4000:]}")


@contextlib.contextmanager
def running_server(tmp_dir: Path, wait: bool = True, target: str = "cnnserve.serving.app:CnnServe", cwd: Path = REPO_ROOT,
                   bentoml_home: Path | None = None, **settings: str):
    """``running_server(tmp, models_dir=..., workers="1")``: keys become CNNSERVE_* variables.

    ``target`` is what ``bentoml serve`` starts: the service in this checkout,
    or a built Bento's tag (pass the ``bentoml_home`` it was built into).

    Each server has a BENTOML_HOME of its own unless told otherwise: BentoML
    empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when a server starts, so
    a second server on the same home deleted the first one's metric files, and
    from then on the first one's ``/metrics`` and statistics missed its own
    requests (perf_analyzer: "failed to find the requested model version"; mean
    batches of None or of the other server's batches in the benchmark's targets,
    which keep two servers up).
    """
    port = free_port()
    grpc_port = free_port(avoid=frozenset({port}))
    env = {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home or tmp_dir / f"bentoml-{port}"),
        "CNNSERVE_CONFIG": os.devnull,
        "BENTOML_DO_NOT_TRACK": "true",
        "CNNSERVE_GRPC_HOST": "127.0.0.1",
        "CNNSERVE_GRPC_PORT": str(grpc_port),
        **{f"CNNSERVE_{k.upper()}": str(v) for k, v in settings.items()},
    }
    log_path = tmp_dir / f"server-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        if wait:
            wait_ready(url, process, log_path)
        yield Server(url, f"127.0.0.1:{grpc_port}", process, log_path)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # any worker left behind


def main() -> None:
    """``python -m loadtests.local_server [KEY=VALUE ...] -- COMMAND``: run COMMAND against a fresh server.

    COMMAND's ``{url}`` and ``{grpc}`` are replaced by the server's HTTP URL and
    gRPC address; KEY=VALUE pairs
    become CNNSERVE_* settings. The server is stopped when COMMAND ends, and
    COMMAND's exit code is returned.
    """
    import sys
    import tempfile

    separator = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    pairs = sys.argv[1:separator]
    if separator >= len(sys.argv) - 1 or not all("=" in pair for pair in pairs):  # no COMMAND, or --help
        sys.exit("usage: python -m loadtests.local_server [KEY=VALUE ...] -- COMMAND\n" + (main.__doc__ or ""))
    settings = dict(item.split("=", 1) for item in pairs)
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), **settings) as server:
        command = [
            part.replace("{url}", server.url).replace("{grpc}", server.grpc_address)
            for part in sys.argv[separator + 1 :]
        ]
        sys.exit(subprocess.run(command, check=False).returncode)


if __name__ == "__main__":
    main()
