"""Adaptive batching inside each worker process.

One ``AdaptiveBatcher`` per model version. Requests queue; whenever the model
is idle, everything queued (up to ``max_batch_size`` images) runs as one ONNX
Runtime call. At low load a request therefore runs at once, alone, and pays no
batching delay; under load, requests pile up while a batch computes and the
next batch is as large as the load. After a batch, when fewer images wait than
it held, the model waits up to a tenth of its compute time (a whole one for
gRPC calls, below) for its clients to come back (``fill``), so batches grow
with the load instead of alternating. ``max_queue_delay_ms`` can hold an idle
model back a little to fill batches further (Triton's knob of the same name).
No such wait runs into a queued request's deadline.

Admission is bounded: a request that would take the queue past
``max_queue_images`` is refused at once (``Overloaded``: 503 / RESOURCE_EXHAUSTED
with Retry-After) instead of joining an unbounded queue; so is one that the full
batches already queued would hold past its deadline, at what a full batch has
cost lately (``check_room``). A request still queued at its deadline is dropped
without running (``DeadlineExceeded``: 504 / DEADLINE_EXCEEDED). An untrained
ResNet-18 at 224 in batches of 4, 240 requests at once with one-second deadlines:
33-36 served and 204-207 waited their second for a 504 before the queue weighed
its work; 29-35 served, 201-207 refused at once and 4-8 504s since
(tests/serving/test_resilience.py).

A lone HTTP request on an idle model skips the queue: ``submit`` runs it
itself when it can run on the event loop (``run_alone``), and saves the two
passes of the loop the queue costs (the batcher's task wakes, then the
caller). Requests read in the same pass as it are not alone (cnnserve/serving/lone_request.py).
Only such a lone request may borrow every core on the loop (``run_now``); a
queued batch borrows them only off the loop, on the executor thread, while no
other worker is busy (cnnserve/serving/runner.py). The calls of one gRPC channel
all reach one worker and come in one per pass of its loop: while the other
worker idled, each ran alone on every core, on the loop, so the next could not
arrive meanwhile (32 calls in flight on one channel, ResNet-18: batches of
1.01; off the loop, 30).

Batches run on one executor thread per worker, shared by every model, so ONNX
Runtime's threads never oversubscribe the cores; ONNX Runtime releases the GIL,
so the event loop keeps reading, decoding and answering requests meanwhile.
Batches of up to ``inline_up_to`` images run on the event loop instead: the
worker sets it from the model's warm-up, to the sizes that compute in under
``INLINE_BELOW_S`` (on the CPU only: host.py). The hand-off to the thread and back costs about 0.1 ms of
CPU, as much as a whole LeNet-5 batch, and a batch that short holds other
requests back (at most 2 ms) less than the hand-off would cost them. Not so
for a batch that holds a gRPC call (``ARRIVES_ONE_PER_PASS``, set by the gRPC
plane): grpc.aio hands the worker one new call per pass of the loop, so a batch
on the loop keeps the next call out until it ends, the next batch is as small,
and it runs on the loop again. ResNet-18 INT8 (a batch of one computes in
1.3 ms), 64 calls, two servers in alternated passes: over one gRPC channel 14%
more calls a second (1.04-1.26) with batches of 28-31 (15-29 before);
perf_analyzer over gRPC batches of 9.6-13.5 (7.8-9.7), as many calls a
second; V2 REST unchanged. HTTP keeps its small batches on the loop: with no
batch on the loop at all ResNet-18 over V2 REST lost 5%.

For the same reason a batch of gRPC calls regathers for longer
(``REGATHER_FRACTION_ONE_PER_PASS``, see ``fill``): the queue holds only the
calls the loop has taken so far, the others wait inside gRPC.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import DeadlineExceeded, DeviceLost, ModelRunFailed, Overloaded, ServiceError, TooLarge

log = logging.getLogger("cnnserve")

RunBatch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
INLINE_BELOW_S = 2e-3
REGATHER_FRACTION = 0.1
# gRPC calls come in one per loop pass, so they regather for up to a whole compute of the last batch (see fill).
REGATHER_FRACTION_ONE_PER_PASS = 1.0
REGATHER_MIN_S = 1e-3  # shorter waits are not worth a timer (the event loop's resolution is a millisecond)
FULL_BATCH_WEIGHT = 0.3  # of the latest full batch in the moving average of their costs (check_room)
DEADLINE_MARGIN_S = 5e-3  # a wait for company ends this long before a queued request's deadline (a loaded loop's pass)
# True in the task of a request whose protocol hands the worker one call per loop pass (gRPC): its batches never
# run on the loop.
ARRIVES_ONE_PER_PASS = contextvars.ContextVar("arrives_one_per_pass", default=False)


def inline_up_to(warm_up_seconds: dict[int, float]) -> int:
    """The largest batch size that computed in under ``INLINE_BELOW_S`` at warm-up (0: none)."""
    return max((size for size, seconds in warm_up_seconds.items() if seconds < INLINE_BELOW_S), default=0)


def full_batch_estimate(warm_up_seconds: dict[int, float], max_batch_size: int) -> float:
    """What a full batch costs to begin with (0: nothing warmed), at the least the warm-up says: on the CPU it
    times a size whose first run took 50 ms or more only that once, cold, so each size's cost per image times the
    maximum bounds it too."""
    return min((seconds / size * max_batch_size for size, seconds in warm_up_seconds.items()), default=0.0)


@dataclass
class BatchResult:
    """One request's rows of a batch, and what the batch cost."""

    probabilities: np.ndarray
    boxes: np.ndarray | None
    queue_ms: float
    compute_ms: float
    batch_images: int


@dataclass
class Job:
    images: np.ndarray
    future: asyncio.Future
    deadline: float  # time.perf_counter() by which the batch must start
    enqueued: float = field(default_factory=time.perf_counter)
    arrives_one_per_pass: bool = field(default_factory=ARRIVES_ONE_PER_PASS.get)


class AdaptiveBatcher:
    def __init__(
        self,
        name: str,
        run: RunBatch,
        executor: Executor,
        max_batch_size: int,
        max_queue_delay_ms: float = 0.0,
        max_queue_images: int | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        inline_up_to: int = 0,
        run_now: Callable[[np.ndarray], tuple | None] | None = None,
        alone: Callable[[], bool] | None = None,
        full_batch_seconds: float = 0.0,
        device_lost: Callable[[Exception], bool] | None = None,
    ):
        self.name = name
        self.run = run
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000
        self.max_queue_images = max_queue_images if max_queue_images is not None else 16 * max_batch_size
        self.on_batch = on_batch or (lambda images, seconds: None)
        self.queue: deque[Job] = deque()
        self.queued_images = 0
        self.arrived = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.idle = True  # no batch is being formed or computed
        self.inline_up_to = inline_up_to
        self.run_now = run_now  # tried on the loop first; None from it means "not now" (runner.py)
        self.alone = alone or (lambda: False)  # is the caller the worker's only request? (lone_request.py)
        self.last_batch_images = 0
        self.last_finished = 0.0
        self.last_compute = 0.0
        # What a full batch costs lately (0: unknown): the warm-up's, then a moving average of the full batches
        # that ran, which a queue too long for its requests' deadlines runs in
        self.full_batch_seconds = full_batch_seconds
        # Whether a run's error says the device is lost, every later run to fail alike (host.py: it then stops the
        # worker, and the server starts another)
        self.device_lost = device_lost or (lambda exc: False)

    def check_room(self, count: int, deadline: float | None = None) -> None:
        """Refuse at once (before any decoding) when ``count`` more images would overflow the queue: for now
        (503, retry), or for good when they would overflow it empty (413: a retry could never succeed). With the
        request's ``deadline``, refuse it for now (503) as well when the full batches queued ahead of it would take
        longer than it has left, at what a full batch has cost lately: it would wait its whole deadline for a
        504. The core asks once per request, before decoding; ``submit`` does not ask again, or a request sent in
        several batches would count its own first ones against its last."""
        if count > self.max_queue_images:
            raise TooLarge(f"{count} images in one request; model {self.name} queues at most {self.max_queue_images}"
                           " (max_queue_images)")
        if self.queued_images + count > self.max_queue_images:
            raise Overloaded(
                f"model {self.name} has {self.queued_images} images queued (limit {self.max_queue_images}); "
                "retry shortly"
            )
        if deadline is not None and self.full_batch_seconds:
            wait = self.queued_images // self.max_batch_size * self.full_batch_seconds
            left = deadline - time.perf_counter()
            if wait and wait > left:  # (with less than a full batch queued, a request past its deadline gets 504)
                raise Overloaded(f"model {self.name} has {self.queued_images} images queued, at least "
                                 f"{1000 * wait:.0f} ms of work, and this request has {1000 * max(left, 0):.0f} ms "
                                 "left before its deadline; retry shortly")

    async def submit(self, images: np.ndarray, deadline: float) -> BatchResult:
        """Queue ``images`` (at most ``max_batch_size``) and wait for their rows.

        ``deadline`` is a ``time.perf_counter()`` value: a job not started by
        then is dropped with ``DeadlineExceeded``.
        """
        if len(images) > self.max_batch_size:
            raise ValueError(f"{len(images)} images exceed the batch limit {self.max_batch_size}; split them first")
        self.check_room(len(images))
        if self.idle and not self.queue and self.alone() and (result := self.run_alone(images, deadline)) is not None:
            return result
        job = Job(images, asyncio.get_running_loop().create_future(), deadline)
        self.queue.append(job)
        self.queued_images += len(images)
        self.arrived.set()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self.serve(), name=f"batcher {self.name}")
        return await job.future

    async def serve(self) -> None:
        while True:
            if not self.queue:
                self.arrived.clear()
                self.idle = True
                await self.arrived.wait()
                self.idle = False
            await self.fill()
            if self.queued_images < self.last_batch_images:
                await asyncio.sleep(0)  # the requests of this pass that have yet to queue (see fill)
            jobs = self.take()
            await self.run_jobs(jobs)

    async def fill(self) -> None:
        """Wait a little for more requests when that should pay, else return at once.

        Two waits, each ended early once its batch size is queued:
        ``max_queue_delay_ms`` (if set) for a full batch; and a regathering wait
        when fewer images are queued than the last batch held: the clients that
        batch answered are likely on their way back, so the model waits up to
        ``REGATHER_FRACTION`` of that batch's compute time for as many images.
        Under steady load this merges alternating half-batches into one; a lone
        client (last batch 1) never waits, nor does a model whose batches compute in
        under 10 ms (LeNet-5: a sub-millisecond timer cost more than it gathered).

        After ``fill``, a queue still smaller than the last batch waits one more
        pass of the event loop, without a timer: the task was woken by the first
        request of a pass, and the other requests read in that pass queue behind
        it. Under perf_analyzer (64 clients, LeNet-5) batches grew from 8 to 23
        images and the request rate by 7–17%; a lone client never waits.

        When the queue's first job is a gRPC call (``ARRIVES_ONE_PER_PASS``),
        the regathering wait lasts up to a whole compute of the last batch: the
        loop takes one call per pass, so in a tenth of it only a call or two
        more arrive, and batches settled at 9-14 images under perf_analyzer
        (ResNet-18 INT8, 64 calls over gRPC). Waiting a whole compute: 18-20
        images, calls a second +6% (0.93-1.11), over one channel 31-39 images
        and +4% (two servers, alternated passes, 3 rounds). The other worker
        and the loop use the cores meanwhile.

        Either wait ends ``DEADLINE_MARGIN_S`` before the earliest deadline in
        the queue: no request is dropped for a wait the batcher chose.
        """
        waits = []
        if self.max_queue_delay:
            waits.append((self.queue[0].enqueued + self.max_queue_delay, self.max_batch_size))
        fraction = REGATHER_FRACTION_ONE_PER_PASS if self.queue[0].arrives_one_per_pass else REGATHER_FRACTION
        if self.queued_images < self.last_batch_images and fraction * self.last_compute >= REGATHER_MIN_S:
            waits.append((self.last_finished + fraction * self.last_compute, self.last_batch_images))
        while True:
            now = time.perf_counter()
            latest = min(job.deadline for job in self.queue) - DEADLINE_MARGIN_S
            pending = [min(until, latest) - now for until, size in waits if self.queued_images < size]
            pending = [seconds for seconds in pending if seconds > 0]
            if not pending:
                return
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), max(pending))
            except TimeoutError:
                pass

    def take(self) -> list[Job]:
        """The next batch: queued jobs in order, skipping those whose caller left or whose deadline passed."""
        jobs, images = [], 0
        now = time.perf_counter()
        while self.queue and images + len(self.queue[0].images) <= self.max_batch_size:
            job = self.queue.popleft()
            if job.future.cancelled() or now > job.deadline:
                self.queued_images -= len(job.images)
                if not job.future.done():
                    late = ("reached the queue past its deadline (reading and decoding the request took that long)"
                            if job.enqueued > job.deadline else
                            f"waited {(now - job.enqueued) * 1000:.0f} ms in the queue, past the deadline")
                    job.future.set_exception(DeadlineExceeded(f"model {self.name}: {late}"))
                continue
            jobs.append(job)
            images += len(job.images)
        self.queued_images -= images
        return jobs

    async def settle_failed(self, jobs: list[Job], exc: Exception) -> None:
        """A batch that failed runs again in halves, down to single requests, so a request whose values break
        the model fails alone and the rest of its batch is answered; so is a batch too large for the device's
        free memory, in smaller ones. A failure that every run meets (a broken device) costs one failing run
        per request and one per split. Only a run that held one request alone fails it, or one on a device that
        is lost: every run would fail the same way."""
        if len(jobs) == 1 or self.device_lost(exc):
            failure = self.run_failed(exc, sum(len(job.images) for job in jobs))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(failure)
            return
        waiting = [job for job in jobs if not job.future.done()]  # callers that left need no answer
        half = (len(waiting) + 1) // 2
        for part in (waiting[:half], waiting[half:]):
            await self.run_jobs(part)

    def run_failed(self, exc: Exception, images: int) -> ServiceError:
        """What the callers of a run that failed get, with ONNX Runtime's reason: 500 / INTERNAL, or on a lost
        device 503 / UNAVAILABLE with Retry-After, since a retry can succeed elsewhere. Logged: it is the model's
        fault or the device's, not the client's."""
        if isinstance(exc, ServiceError):
            return exc
        reason = str(exc) or type(exc).__name__
        log.error("model %s failed to run %d images: %s", self.name, images, reason)
        if self.device_lost(exc):
            return DeviceLost(f"model {self.name}: this worker's GPU is lost ({reason}); it stops and the server "
                              "starts another: retry")
        return ModelRunFailed(f"model {self.name} failed to run this request's images: {reason}")

    def timed_run(self, batch: np.ndarray, run: RunBatch | None = None):
        """The model's outputs and how long computing them took (without any thread hand-off)."""
        began = time.perf_counter()
        outputs = (run or self.run)(batch)
        return outputs, time.perf_counter() - began

    def run_on_loop(self, batch: np.ndarray, borrow: bool = False):
        """``timed_run`` right here on the event loop, if the batch is small enough (or, when ``borrow``, every
        core is free); else None."""
        if len(batch) <= self.inline_up_to:
            return self.timed_run(batch)
        if borrow and self.run_now and (now := self.timed_run(batch, self.run_now))[0] is not None:
            return now
        return None

    def finished(self, images: int, seconds: float) -> None:
        self.on_batch(images, seconds)
        if images == self.max_batch_size:
            recent = self.full_batch_seconds or seconds
            self.full_batch_seconds = recent + FULL_BATCH_WEIGHT * (seconds - recent)
        self.last_batch_images, self.last_finished, self.last_compute = images, time.perf_counter(), seconds

    def run_alone(self, images: np.ndarray, deadline: float) -> BatchResult | None:
        """A lone request's rows, computed now on the loop; None if the model cannot take them at once.

        At one client the queue's two event-loop passes cost 0.15-0.2 ms of a
        cold CPU (docs/architecture.md). A ``max_queue_delay_ms`` asks to wait
        for company, so it always queues.
        """
        if self.max_queue_delay or time.perf_counter() > deadline:
            return None
        try:
            done = self.run_on_loop(images, borrow=True)
        except Exception as exc:  # noqa: BLE001  (ONNX Runtime's, for this request alone)
            raise self.run_failed(exc, len(images)) from exc
        if done is None:
            return None
        (probabilities, boxes), seconds = done
        self.finished(len(images), seconds)
        return BatchResult(probabilities, boxes, queue_ms=0.0, compute_ms=seconds * 1000, batch_images=len(images))

    async def run_jobs(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        started = time.perf_counter()
        batch = jobs[0].images if len(jobs) == 1 else np.concatenate([j.images for j in jobs])
        try:
            done = None if any(job.arrives_one_per_pass for job in jobs) else self.run_on_loop(batch)
            if done is None:
                done = await asyncio.get_running_loop().run_in_executor(self.executor, self.timed_run, batch)
            (probabilities, boxes), seconds = done
        except Exception as exc:  # noqa: BLE001  (ONNX Runtime's: settled request by request below)
            await self.settle_failed(jobs, exc)
            return
        self.finished(len(batch), seconds)
        offset = 0
        for job in jobs:
            n = len(job.images)
            if not job.future.done():
                job.future.set_result(
                    BatchResult(
                        probabilities[offset : offset + n],
                        None if boxes is None else boxes[offset : offset + n],
                        queue_ms=(started - job.enqueued) * 1000,
                        compute_ms=seconds * 1000,
                        batch_images=len(batch),
                    )
                )
            offset += n
