"""The CPU budget per request: a worker's main thread counts as its event loop, its other threads as the rest of
the server, and this process with its children outside the server as the load."""

import subprocess
import sys
import time

import psutil

from loadtests.bench.cpu_budget import WorkerSampler, report, split

# A stand-in worker: its main thread spins for a few seconds while another thread sleeps.
SPINNING_WORKER = """
import threading, time
threading.Thread(target=time.sleep, args=(4,)).start()
until = time.perf_counter() + 4
while time.perf_counter() < until:
    pass
"""


def test_a_workers_main_thread_is_its_loop_and_its_other_threads_the_rest():
    worker = subprocess.Popen([sys.executable, "-c", SPINNING_WORKER])
    try:
        process = psutil.Process(worker.pid)
        shares = split([process], {worker.pid}, 1.0)
    finally:
        worker.kill()
        worker.wait()
    assert shares["loops"] > 0.3  # up to a core (less on a busy machine)
    assert shares["others"] < 0.1
    assert shares["client"] < 0.2  # this process only slept meanwhile


def test_the_sampler_gives_the_cores_over_a_window_named_afterwards():
    worker = subprocess.Popen([sys.executable, "-c", SPINNING_WORKER])
    try:
        process = psutil.Process(worker.pid)
        with WorkerSampler([process], every=0.1) as sampler:
            began = time.time()
            time.sleep(1.5)
    finally:
        worker.kill()
        worker.wait()
    cores = sampler.cores(began + 0.5, began + 1.5)
    assert 0.3 < cores["loops"] == cores["busiest_loop"] <= 1.05  # the one worker's main thread spun
    assert cores["others"] < 0.1
    assert sampler.cores(began - 60, began - 30) is None  # no readings then


def test_the_report_shows_every_share_per_request():
    row = {"protocol": "v2-http", "rps": 1000.0, "mean_batch": 20.0, "loops": 0.25, "others": 1.0, "client": 0.15,
           "unaccounted": 0.6, "batch_share": 0.5}
    table = report("resnet18-digits", "int8", 64, [row])
    assert table.startswith("resnet18-digits (INT8), 64 clients")
    assert "| v2-http | 1000 | 20.0 | 0.250 | 1.000 | 0.150 | 0.600 | 0.50 |" in table
