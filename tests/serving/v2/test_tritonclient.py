"""NVIDIA's own clients and tools work against cnnserve unchanged: tritonclient
over HTTP and gRPC, and perf_analyzer for a short bounded measurement."""

import re
import subprocess

import pytest

from loadtests.digit_images import digit_files
from loadtests.triton_tools import PERF_ANALYZER, TRITON_PYTHON, perf_analyzer_env, require

CHECKS = __file__.replace("test_tritonclient.py", "tritonclient_checks.py")


def test_tritonclient_http_and_grpc(server, tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(digit_files(1, 32, count=1)[0].data)
    result = subprocess.run(
        [str(require(TRITON_PYTHON)), CHECKS, server.url.removeprefix("http://"), server.grpc_address, str(image)],
        capture_output=True, text=True, timeout=300,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 12


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_measures_without_errors(server, protocol):
    address = server.url.removeprefix("http://") if protocol == "http" else server.grpc_address
    result = subprocess.run(
        [str(require(PERF_ANALYZER)), "-m", "lenet5-digits", "-u", address, "-i", protocol,
         "--input-data", "zero", "--concurrency-range", "4", "--measurement-mode", "count_windows",
         "--measurement-request-count", "200", "--stability-percentage", "100", "--max-trials", "3"],
        capture_output=True, text=True, timeout=300, env=perf_analyzer_env(),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower()
    throughput = float(re.search(r"Concurrency: 4, throughput: ([\d.]+) infer/sec", output).group(1))
    assert throughput > 0
    # The server side's breakdown, from the statistics extension
    server_side = re.search(r"queue (\d+) usec \+ compute input (\d+) usec \+ compute infer (\d+) usec", output)
    assert server_side, output
    assert int(server_side.group(3)) > 0
