"""One batcher per GPU, fed by every worker on it (``shared_batches: true``).

A GPU gets several workers (config.WORKERS_PER_GPU: one Python process parses too few requests to keep it busy),
and each worker batched only its own clients: at 64 clients an H100 computed batches of 7.7 (ResNet-18) and 8.2
(ResNet-50) images, four workers' at a time (loadtests/results/2026-11-27-gpu). With shared batches, worker *i*
below the GPU count owns GPU *i*'s batches. The other workers on that GPU still read, decode and batch their own
requests, but hand each batch they form to the owner over a Unix socket in the server's folder
(control.server_folder); the owner's batcher merges them with its own requests and with each other's into one run.
Only the worker that computes a batch records it in the batch metrics, so they count what the GPU ran.

A forwarded batch was admitted by its own worker's queue bound and its expired requests dropped there, so the
owner neither refuses nor drops it: its queue holds at most one batch per forwarding worker beyond its own bound.
A worker runs a batch itself, on its own sessions, whenever the owner cannot take it (not listening yet, stopping,
gone, not serving that model version yet, or running it with another variant or provider: ``runs_as``): a worker
that dies or a version that loads a little later elsewhere costs batch size, never an answer. It also runs a batch
itself while the owner computes nothing (``DeviceBusy``): there is then no batch to join, and the hand-over costs a
lone request 0.3 ms (LeNet-5 at one client on two CPU workers: p50 0.73 ms handed over, 0.44 ms not;
loadtests/results/2026-11-27/shared-batches-cpu).

Transport: one connection per forwarding worker, used only by its executor thread (one batch in flight per
worker); each message is a length-prefixed JSON header and the raw array. The owner reads each connection on a
thread of its own, straight into the array (the kernel's copy, without the GIL), and hands the batch to its
event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import logging
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from .errors import ModelRunFailed, ModelUnavailable, ServiceError

log = logging.getLogger("cnnserve")

HEADER_LENGTH = struct.Struct("!I")
RECONNECT_AFTER_S = 1.0  # after the owner could not be reached, run batches here this long before trying again
# How long a forwarding worker's socket waits on any one call (connect, send, each read of the answer) before it
# gives up on the owner and computes the batch itself: BentoML's own request timeout (app.py's traffic timeout), far
# beyond any batch the owner's bounded queue holds.
ANSWER_TIMEOUT_S = 60.0
NEVER = math.inf  # a forwarded batch's deadline at its owner: it is never dropped there (see above)

Outputs = tuple[np.ndarray, np.ndarray | None]


def owner_of(worker_index: int, gpus: int) -> int:
    """The worker that owns the batches of worker ``worker_index``'s GPU (workers share GPUs round robin, host.py);
    on the CPU, worker 0."""
    return worker_index % gpus if gpus else 0


def socket_path(folder: Path, owner: int) -> Path:
    return folder / f"batches-{owner}.sock"


def runs_as(variant: str, provider: str) -> str:
    """How a worker runs a model version, which the owner must share to compute another worker's batch: with
    ``precision: auto`` each worker chooses its variant by its own timings, and a GPU session that fails steps
    down to another provider in one worker only."""
    return f"{variant} on {provider}"


def busy_path(folder: Path, owner: int) -> Path:
    return folder / f"batches-{owner}.busy"


class DeviceBusy:
    """Whether the owner is computing a batch, for every worker on its device to see: an ``flock`` on a file beside
    the socket, held by the owner while any batch its runners run is computing (on the CPU a lone request's run on
    every core, ``run_if_cores_free``, does not take it), and dropped by the kernel if the owner dies. Each end
    opens the file itself, so two ends in one process exclude each other too (the tests' case)."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.running = 0  # the owner's batches running now (on the CPU one on the loop can overlap one off it)
        self.count_lock = threading.Lock()

    @contextlib.contextmanager
    def computing(self):
        with self.count_lock:
            self.running += 1
            if self.running == 1:
                fcntl.flock(self.fd, fcntl.LOCK_EX)  # never waits long: the other ends only test it
        try:
            yield
        finally:
            with self.count_lock:
                self.running -= 1
                if self.running == 0:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)

    def idle(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return True


def send(sock: socket.socket, header: dict, *arrays: np.ndarray) -> None:
    encoded = json.dumps(header).encode()
    sock.sendall(HEADER_LENGTH.pack(len(encoded)) + encoded)
    for array in arrays:
        sock.sendall(memoryview(np.ascontiguousarray(array, dtype=np.float32)).cast("B"))


def receive_into(sock: socket.socket, view: memoryview) -> None:
    while view:
        received = sock.recv_into(view)
        if not received:
            raise ConnectionError("the other worker closed the connection")
        view = view[received:]


def receive_header(sock: socket.socket) -> dict:
    length = bytearray(HEADER_LENGTH.size)
    receive_into(sock, memoryview(length))
    encoded = bytearray(HEADER_LENGTH.unpack(length)[0])
    receive_into(sock, memoryview(encoded))
    return json.loads(encoded)


def receive_array(sock: socket.socket, shape: list[int], into: np.ndarray | None = None) -> np.ndarray:
    """The next float32 array of ``shape``: in new memory, or at the start of ``into`` (flat, large enough)."""
    count = int(np.prod(shape))
    array = np.empty(count, dtype=np.float32) if into is None else into[:count]
    receive_into(sock, memoryview(array).cast("B"))
    return array.reshape(shape)


class Forwarder:
    """A worker's link to the owner of its GPU's batches; used from the worker's executor thread only."""

    def __init__(self, path: Path):
        self.path = path
        self.sock: socket.socket | None = None
        self.retry_at = 0.0

    def connection(self) -> socket.socket | None:
        if self.sock is None and time.monotonic() >= self.retry_at:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(ANSWER_TIMEOUT_S)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                self.retry_at = time.monotonic() + RECONNECT_AFTER_S
            else:
                self.sock = sock
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.retry_at = time.monotonic() + RECONNECT_AFTER_S

    def forward(self, key: str, runs_as: str, images: np.ndarray) -> Outputs | None:
        """The batch's outputs as the owner computed them, or None when the owner cannot take it now, or would run
        it otherwise than this worker does (``runs_as``: the variant and provider, which each worker chooses)."""
        sock = self.connection()
        if sock is None:
            return None
        try:
            send(sock, {"model": key, "runs_as": runs_as, "shape": list(images.shape)}, images)
            answer = receive_header(sock)
            if "error" not in answer:
                probabilities = receive_array(sock, answer["probabilities"])
                return probabilities, None if answer["boxes"] is None else receive_array(sock, answer["boxes"])
        except (OSError, ValueError) as exc:  # gone, restarted or silent past the timeout: compute here
            log.warning("the batch owner at %s did not answer (%s); this worker computes its batches until it does",
                        self.path, exc)
            self.close()
            return None
        if answer["error"] == ModelUnavailable.__name__:  # not serving that version (yet, or any more), or otherwise
            return None
        raise OwnerRunFailed(f"{answer['message']} (in the worker that owns the device's batches)")


class OwnerRunFailed(RuntimeError):
    """The batch's owner failed to compute it: its reason, which says nothing of this worker's own device."""


class ForwardingRunner:
    """A model's batches in a worker that does not own its device's: handed to the owner while it computes, else
    run here. Never on the event loop (``inline_up_to`` 0, no ``solo``): the hand-over blocks until the answer."""

    inline_up_to = 0
    solo = None

    def __init__(self, key: str, runs_as: str, local: Callable[[np.ndarray], Outputs], forwarder: Forwarder,
                 owner_busy: DeviceBusy):
        self.key = key
        self.runs_as = runs_as  # how this worker runs the model: the owner must run it alike (runs_as())
        self.local = local
        self.forwarder = forwarder
        self.owner_busy = owner_busy
        # The last batch: None when run here with the owner idle; "owner" when the owner computed it; "this_worker"
        # when handed over but run here, the owner unable to take it.
        self.handed: str | None = None

    def __call__(self, images: np.ndarray) -> Outputs:
        if self.owner_busy.idle():
            self.handed = None
            return self.local(images)
        outputs = self.forwarder.forward(self.key, self.runs_as, images)
        self.handed = "this_worker" if outputs is None else "owner"
        return self.local(images) if outputs is None else outputs


class BatchOwner:
    """The owner's end: a listening socket, and a thread per forwarding worker that reads its batches and hands
    each to ``run`` on the owner's event loop."""

    def __init__(self, path: Path, run: Callable[[str, str, np.ndarray], Awaitable[Outputs]],
                 loop: asyncio.AbstractEventLoop):
        """``run(key, runs_as, images)``: the batch's outputs, or ``ModelUnavailable`` when this worker does not run
        that model version as ``runs_as`` says."""
        self.path = path
        self.run = run
        self.loop = loop
        self.connections: set[socket.socket] = set()
        path.unlink(missing_ok=True)  # a socket left by a worker that died
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        threading.Thread(target=self.accept, name="batch owner", daemon=True).start()
        log.info("this worker computes the batches of every worker on its device (shared_batches, %s)", path)

    def accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the worker stops
                return
            self.connections.add(connection)
            threading.Thread(target=self.serve, args=(connection,), name="forwarded batches", daemon=True).start()

    def serve(self, connection: socket.socket) -> None:
        try:
            with connection:
                self.answer_batches(connection)
        finally:
            self.connections.discard(connection)

    def answer_batches(self, connection: socket.socket) -> None:
        """Each batch's answer, until the forwarding worker goes or this one stops. Stopping, it closes the
        connection instead of answering, so the batch's own worker computes it (an answer would be an error)."""
        # One batch in flight per connection, answered once it has run: its memory can take the next one. Fresh
        # memory for every batch cost the owner a page fault per 4 KiB (loadtests/bench/handover.py).
        buffer = np.empty(0, np.float32)
        while True:
            try:
                header = receive_header(connection)
                if buffer.size < (count := int(np.prod(header["shape"]))):
                    buffer = np.empty(count, np.float32)
                images = receive_array(connection, header["shape"], into=buffer)
                handed = asyncio.run_coroutine_threadsafe(
                    self.run(header["model"], header["runs_as"], images), self.loop)
            except (OSError, ValueError, RuntimeError):  # the forwarding worker went, or this loop is closed
                return
            try:
                probabilities, boxes = handed.result()
            except concurrent.futures.CancelledError:  # this worker stops with the batch queued
                return
            except Exception as exc:  # noqa: BLE001  (every failure of the run goes back to the batch's worker)
                message = (exc.reason if isinstance(exc, ModelRunFailed)  # the batch's worker names the model
                           else exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}")
                reply = ({"error": type(exc).__name__, "message": message},)
            else:
                shapes = {"probabilities": list(probabilities.shape),
                          "boxes": None if boxes is None else list(boxes.shape)}
                reply = (shapes, probabilities) + (() if boxes is None else (boxes,))
            try:
                send(connection, *reply)
            except OSError:
                return

    def close(self) -> None:
        """Stop taking batches: the forwarding workers find their connections closed and compute their own."""
        self.listener.close()
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.path.unlink()

