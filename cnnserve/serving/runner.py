"""Core tokens shared by the worker processes of one server, so a worker can use
every core while the others have nothing to do, without ever oversubscribing them.

Each worker computes on ``threads`` cores (``workers × threads ≤ cores``),
which is what keeps a loaded server efficient. When only one worker has work,
though, the other workers' cores idle: a lone request (ResNet-18 at batch 1
takes 7.1 ms on one thread but 4.1 ms on two), or every call of one gRPC
channel, which all reach one worker (ResNet-18, 64 calls: 0.46-0.49 of raw ONNX
Runtime on that worker's one core). So a worker may borrow: a lone small batch
tries to take every core token at once (never waiting) and runs on the event
loop; a queued batch does the same on the executor thread, but only while no
other worker has a request in flight (``busy``), since borrowing from a worker
that is merely between two batches makes its next batch wait (HTTP load over
both workers lost 3-8%). Holding every token, a batch runs a session of the
model with a thread per core; otherwise it claims its worker's own
share, waiting until they are free. Two sessions have a thread per core: the lone request's spins between
the steps of a run, since its loop has nothing else to do meanwhile; a queued batch's does not, since its
loop is reading the next calls meanwhile, and spinning threads starved it (one gRPC channel to ResNet-18
INT8, 16 calls in flight: 460 calls/s in batches of 1.7 with spinning, 633 in batches of 3.6 without; 64
calls: 688 and 740, in alternated passes). Tokens and busy marks are ``fcntl``
byte-range locks on one file in the folder the server's workers share
(control.server_folder), so the kernel releases those of a worker that dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import numpy as np


class CoreTokens:
    def __init__(self, cores: int, share: int, worker_index: int, workers: int, path: Path):
        """``worker_index`` counts from 0; worker i owns tokens i × share ... (i + 1) × share - 1, and marks
        itself busy at byte ``cores + i``."""
        self.cores = cores
        self.path = path
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self.own = [(worker_index * share + i) % cores for i in range(share)]
        self.busy_mark = cores + worker_index
        self.others_marks = [cores + i for i in range(workers) if i != worker_index]
        self.in_flight = 0

    def lock(self, token: int, wait: bool) -> bool:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), 1, token)
        except BlockingIOError:
            return False
        return True

    def release(self, token: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, token)

    @contextlib.contextmanager
    def claim(self):
        """Hold this worker's own share of the tokens, waiting for them."""
        for token in self.own:
            self.lock(token, wait=True)
        try:
            yield
        finally:
            for token in self.own:
                self.release(token)

    def request_began(self) -> None:
        """This worker is busy from its first request in flight (``request_ended`` after each) to its last."""
        self.in_flight += 1
        if self.in_flight == 1:
            self.lock(self.busy_mark, wait=True)  # never waits long: the others only test it

    def request_ended(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.release(self.busy_mark)

    def others_idle(self) -> bool:
        """Whether no other worker has a request in flight (their busy marks are all free)."""
        for mark in self.others_marks:
            if not self.lock(mark, wait=False):
                return False
            self.release(mark)
        return True

    @contextlib.contextmanager
    def claim_all_now(self):
        """Try to hold every token at once, never waiting; yields whether it did."""
        held = [t for t in range(self.cores) if self.lock(t, wait=False)]
        try:
            yield len(held) == self.cores
        finally:
            for token in held:
                self.release(token)


SOLO_MAX_BATCH = 4  # larger batches mean load, when every worker's own cores are busy anyway


class ModelRunner:
    """Runs one model's batches in a worker: on its own cores (``__call__``, on the
    executor thread), or, while every core is free, right away on the event loop
    with a session that has a thread per core (``run_if_cores_free``)."""

    def __init__(self, loaded, inline_up_to: int, tokens: CoreTokens | None = None, solo=None, solo_queued=None):
        self.loaded = loaded
        self.inline_up_to = inline_up_to  # batches this small run on the loop (batcher.py)
        self.tokens = tokens
        self.solo = solo  # the same model with a thread per core, spinning: a lone request's
        self.solo_queued = solo_queued  # ... and not spinning: a queued batch's, off the loop (both or neither)

    def __call__(self, images: np.ndarray):
        """A batch small enough for the event loop needs no tokens: it runs on the loop's own thread. A larger
        one (on the executor thread) runs on every core while the other workers have nothing in flight, else
        on this worker's own."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self.tokens is None or len(images) <= self.inline_up_to:
            return self.loaded.run(images)
        if self.solo is not None and self.tokens.others_idle():
            with self.tokens.claim_all_now() as every_core:
                if every_core:
                    return self.solo_queued.run(images)
        with self.tokens.claim():
            return self.loaded.run(images)

    def run_if_cores_free(self, images: np.ndarray):
        """The outputs, computed now on every core, or None when the batch is large or a core is taken.

        It runs on the event loop, for a lone request only (the batcher's ``run_alone``): the executor
        hand-off costs 0.8 ms at batch 1 here, and with no other request in the worker the loop has
        nothing else to run meanwhile.
        """
        if self.solo is None or len(images) > SOLO_MAX_BATCH:
            return None
        with self.tokens.claim_all_now() as every_core:
            return self.solo.run(np.ascontiguousarray(images, dtype=np.float32)) if every_core else None
