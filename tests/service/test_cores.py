"""Core tokens: a worker always gets its own share, borrows the others' only while
no other worker holds them, and a dead worker's tokens come back."""

import subprocess
import sys
import textwrap

import numpy as np

from service.cores import CoreTokens, ModelRunner


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


def test_a_worker_alone_may_borrow_every_core(tmp_path):
    tokens = CoreTokens(cores=2, share=1, worker_index=0, path=tmp_path / "cores.lock")
    with tokens.claim(all_if_free=True) as held:
        assert held == 2
    with tokens.claim(all_if_free=False) as held:
        assert held == 1


def test_a_busy_worker_keeps_its_cores_and_a_dead_one_gives_them_back(tmp_path):
    path = tmp_path / "cores.lock"
    tokens = CoreTokens(cores=2, share=1, worker_index=0, path=path)
    other = hold_token_in_another_process(path, token=1)
    with tokens.claim(all_if_free=True) as held:
        assert held == 1
    other.kill()
    other.wait()
    with tokens.claim(all_if_free=True) as held:
        assert held == 2


class Session:
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def run(self, images):
        self.calls.append((self.name, len(images)))
        return images, None


def test_the_runner_uses_the_every_core_session_only_for_small_batches_with_every_core_held(tmp_path):
    calls = []
    path = tmp_path / "cores.lock"
    tokens = CoreTokens(cores=2, share=1, worker_index=0, path=path)
    runner = ModelRunner(Session("own", calls), inline_up_to=0, tokens=tokens, solo=Session("solo", calls),
                         solo_up_to=4)
    runner(np.zeros((4, 1)))
    runner(np.zeros((5, 1)))
    other = hold_token_in_another_process(path, token=1)
    runner(np.zeros((1, 1)))
    other.kill()
    assert calls == [("solo", 4), ("own", 5), ("own", 1)]
