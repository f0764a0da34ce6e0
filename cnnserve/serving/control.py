"""Explicit model control across a server's workers (``model_control_mode: explicit``, Triton's name).

The models an operator has asked for live in one small file that every worker of the server reads: a folder
named after the arbiter process (every worker's parent) and the repository's path. A load or
unload through the API rewrites it (under a lock, a new generation each time, replaced by rename so no worker
reads half of it); each worker's poller (lifecycle.py) converges on it and reports what it now serves beside it.
The API answers once every worker has reported that generation, with the failures each one met.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

WANTED, LOCK = "wanted.json", "wanted.lock"


def server_folder(models_dir: Path, arbiter: psutil.Process | None = None, make: bool = True) -> Path:
    """The folder the workers of one server share (the control file here, the core tokens' lock): named
    after its arbiter's process id and start time (in a container the arbiter is always process 1, and /tmp may
    outlive a restart, which then served the previous run's models instead of ``serve``), and its repository (two
    servers never share). ``arbiter``: by default the calling worker's parent."""
    repository = hashlib.sha256(str(models_dir.resolve()).encode()).hexdigest()[:12]
    arbiter = arbiter or psutil.Process(os.getppid())
    folder = Path(tempfile.gettempdir()) / f"cnnserve-control-{arbiter.pid}-{int(arbiter.create_time())}-{repository}"
    if make:
        folder.mkdir(exist_ok=True)
    return folder


def remove_when_the_server_stops(models_dir: Path) -> None:
    """In the arbiter: remove the folder its workers share once it exits (it stops its workers first)."""
    atexit.register(shutil.rmtree, server_folder(models_dir, psutil.Process(), make=False), ignore_errors=True)


class ControlFile:
    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def for_this_server(cls, models_dir: Path) -> ControlFile:
        return cls(server_folder(models_dir))

    def start(self, names: tuple[str, ...]) -> None:
        """The models asked for at start (``serve``), unless another worker of this server wrote them already."""
        with self.locked():
            if not (self.folder / WANTED).exists():
                self.write(0, sorted(names))

    def wanted(self) -> tuple[int, list[str]]:
        data = json.loads((self.folder / WANTED).read_text())
        return data["generation"], data["models"]

    def ask(self, change: Callable[[set[str]], set[str]]) -> int:
        """Change the models asked for; the new generation, which the workers' reports will carry."""
        with self.locked():
            generation, names = self.wanted()
            self.write(generation + 1, sorted(change(set(names))))
            return generation + 1

    def write(self, generation: int, names: list[str]) -> None:
        staged = self.folder / f".{WANTED}.{os.getpid()}"
        staged.write_text(json.dumps({"generation": generation, "models": names}))
        staged.replace(self.folder / WANTED)

    @contextlib.contextmanager
    def locked(self):
        with open(self.folder / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def report(self, worker: int, generation: int, serving: list[str], refused: dict[str, str]) -> None:
        staged = self.folder / f".worker-{worker}.json"
        staged.write_text(json.dumps({"pid": os.getpid(), "generation": generation, "serving": serving,
                                      "refused": refused}))
        staged.replace(self.folder / f"worker-{worker}.json")

    def reports(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("worker-*.json"))]

    async def settled(self, generation: int, workers: int, timeout_s: float) -> list[dict]:
        """The reports of all ``workers`` once each has reached ``generation`` (a worker that has not reported yet
        counts as behind), or TimeoutError saying how many are behind."""
        deadline = time.monotonic() + timeout_s
        while True:
            reports = self.reports()
            done = [r for r in reports if r["generation"] >= generation]
            if len(done) >= workers:
                return done
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers - len(done)} of {workers} worker process(es) did not apply the change "
                                   f"within {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
