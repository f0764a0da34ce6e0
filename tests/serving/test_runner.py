"""Core tokens: a worker always gets its own share, borrows the others' only while
no other worker holds them (a queued batch: only while no other worker is busy),
and a dead worker's tokens and busy mark come back."""

import subprocess
import sys
import textwrap

import numpy as np

from cnnserve.serving.runner import CoreTokens, ModelRunner


def hold_token_in_another_process(path, token: int) -> subprocess.Popen:
    """Another worker: holds ``token`` of the file at ``path`` until its stdin closes."""
    script = textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, {token})
        print("held", flush=True)
        sys.stdin.read()
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_worker_alone_may_take_every_core(tmp_path):
    tokens = CoreTokens(cores=2, share=1, worker_index=0, workers=2, path=tmp_path / "cores.lock")
    with tokens.claim_all_now() as every_core:
        assert every_core


def test_a_busy_worker_keeps_its_cores_and_a_dead_one_gives_them_back(tmp_path):
    path = tmp_path / "cores.lock"
    tokens = CoreTokens(cores=2, share=1, worker_index=0, workers=2, path=path)
    other = hold_token_in_another_process(path, token=1)
    with tokens.claim_all_now() as every_core:
        assert not every_core
    with tokens.claim():  # its own token 0 is still free
        pass
    other.kill()
    other.wait()
    with tokens.claim_all_now() as every_core:
        assert every_core


class Session:
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def run(self, images):
        self.calls.append((self.name, len(images)))
        return images, None


def test_only_a_small_batch_with_every_core_free_runs_now_on_every_core(tmp_path):
    calls = []
    path = tmp_path / "cores.lock"
    tokens = CoreTokens(cores=2, share=1, worker_index=0, workers=2, path=path)
    runner = ModelRunner(Session("own", calls), inline_up_to=0, tokens=tokens, solo=Session("solo", calls),
                         solo_queued=Session("solo, not spinning", calls))
    assert runner.run_if_cores_free(np.zeros((4, 1))) is not None
    assert runner.run_if_cores_free(np.zeros((5, 1))) is None  # a large batch means load: its own cores
    other = hold_token_in_another_process(path, token=1)
    assert runner.run_if_cores_free(np.zeros((1, 1))) is None
    runner(np.zeros((1, 1)))
    other.kill()
    assert calls == [("solo", 4), ("own", 1)]


def test_a_queued_batch_borrows_every_core_only_while_no_other_worker_is_busy(tmp_path):
    """It borrows them with the session whose threads do not spin: its event loop reads the next calls meanwhile."""
    calls = []
    path = tmp_path / "cores.lock"
    tokens = CoreTokens(cores=2, share=1, worker_index=0, workers=2, path=path)
    runner = ModelRunner(Session("own", calls), inline_up_to=0, tokens=tokens, solo=Session("solo", calls),
                         solo_queued=Session("solo, not spinning", calls))
    runner(np.zeros((30, 1)))  # the other worker idle: one gRPC channel's batch gets both cores
    other_busy = hold_token_in_another_process(path, token=3)  # worker 1's busy mark (byte cores + 1)
    runner(np.zeros((30, 1)))  # worker 1 has a request in flight, though its core token is free
    other_busy.kill()
    other_busy.wait()
    runner(np.zeros((30, 1)))
    assert runner.run_if_cores_free(np.zeros((1, 1))) is not None  # a lone request's: the spinning one
    assert calls == [("solo, not spinning", 30), ("own", 30), ("solo, not spinning", 30), ("solo", 1)]


def test_a_worker_is_busy_from_its_first_request_in_flight_to_its_last(tmp_path):
    path = tmp_path / "cores.lock"
    worker0 = CoreTokens(cores=2, share=1, worker_index=0, workers=2, path=path)
    probe = textwrap.dedent(f"""
        from pathlib import Path
        from cnnserve.serving.runner import CoreTokens
        print(CoreTokens(cores=2, share=1, worker_index=1, workers=2, path=Path({str(path)!r})).others_idle())
    """)

    def seen_idle_by_worker1() -> bool:  # fcntl locks are per process: ask from another one
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "True"

    assert seen_idle_by_worker1()
    worker0.request_began()
    worker0.request_began()
    assert not seen_idle_by_worker1()
    worker0.request_ended()
    assert not seen_idle_by_worker1()  # one request still in flight
    worker0.request_ended()
    assert seen_idle_by_worker1()
