"""Core tokens shared by the worker processes of one server, so a lone small
batch can use every core without ever oversubscribing them.

Each worker computes on ``threads`` cores (``workers × threads ≤ cores``),
which is what keeps a loaded server efficient. A lone request, though, leaves
the other workers' cores idle, and ResNet-18 at batch 1 takes 7.1 ms on one
thread but 5.3 ms on two. So every ONNX Runtime call first claims core tokens:
its own share, blocking until they are free, and, for a small batch, every other
token that is free at that instant (never waiting for them). Holding them all,
it runs the model's second session, which has a thread per core. Tokens are
``fcntl`` byte-range locks on one file per server (named after the worker
processes' common parent), so the kernel releases the tokens of a worker that dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

import numpy as np


class CoreTokens:
    def __init__(self, cores: int, share: int, worker_index: int, path: Path | None = None):
        """``worker_index`` counts from 0; worker i owns tokens i × share ... (i + 1) × share - 1."""
        self.cores = cores
        self.path = path or Path(tempfile.gettempdir()) / f"cnnserve-cores-{os.getppid()}.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self.own = [(worker_index * share + i) % cores for i in range(share)]

    def lock(self, token: int, wait: bool) -> bool:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), 1, token)
        except BlockingIOError:
            return False
        return True

    def release(self, token: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, token)

    @contextlib.contextmanager
    def claim(self, all_if_free: bool):
        """Hold ``share`` tokens (waiting for them); with ``all_if_free``, also any other free one.

        Yields the number held: ``cores`` means the caller may use every core.
        """
        held = []
        try:
            for token in self.own:
                self.lock(token, wait=True)
                held.append(token)
            if all_if_free:
                held += [t for t in range(self.cores) if t not in self.own and self.lock(t, wait=False)]
            yield len(held)
        finally:
            for token in held:
                self.release(token)


SOLO_MAX_BATCH = 4  # larger batches mean load, when every worker's own cores are busy anyway


class ModelRunner:
    """Runs one model's batches in a worker: tiny ones as they come (on the event
    loop, see batcher.py), others on claimed cores, on every core when they are free."""

    def __init__(self, loaded, inline_up_to: int, tokens: CoreTokens | None = None, solo=None, solo_up_to: int = 0):
        self.loaded = loaded
        self.inline_up_to = inline_up_to
        self.tokens = tokens
        self.solo = solo  # the same model with a thread per core
        self.solo_up_to = solo_up_to  # batch sizes the solo session ran faster at warm-up

    def __call__(self, images: np.ndarray):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self.tokens is None or len(images) <= self.inline_up_to:
            return self.loaded.run(images)
        with self.tokens.claim(all_if_free=len(images) <= self.solo_up_to) as held:
            session = self.solo if held == self.tokens.cores and self.solo is not None else self.loaded
            return session.run(images)
