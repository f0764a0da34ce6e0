"""The adaptive batcher: a lone request runs at once (inside ``submit`` when it
is alone in its worker), batches grow while the model is busy and regather when clients come back, every caller gets its own
rows, the queue is bounded, a request past its deadline never runs, and tiny
batches skip the thread hand-off."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cnnserve.serving.batcher import ARRIVES_ONE_PER_PASS, AdaptiveBatcher, full_batch_estimate, inline_up_to
from cnnserve.serving.errors import DeadlineExceeded, DeviceLost, ModelRunFailed, Overloaded, TooLarge

FAR = 3600.0
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class SlowModel:
    """Doubles its input; records the size of every batch; takes ``seconds`` per call."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.batches: list[int] = []

    def __call__(self, images: np.ndarray):
        time.sleep(self.seconds)
        self.batches.append(len(images))
        return images.reshape(len(images), -1) * 2, None


def batcher(model, **options) -> AdaptiveBatcher:
    options.setdefault("max_batch_size", 8)
    return AdaptiveBatcher("m/1", model, ThreadPoolExecutor(1), **options)


def deadline(seconds: float = FAR) -> float:
    return time.perf_counter() + seconds


def images(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 1), value, np.float32)


async def grpc_call(b: AdaptiveBatcher, after: float = 0.0, due_in: float = FAR):
    """One image submitted as the gRPC plane submits a call (marked in its own task), ``after`` seconds."""
    ARRIVES_ONE_PER_PASS.set(True)
    await asyncio.sleep(after)
    return await b.submit(images(1.0), deadline(due_in))


async def test_a_lone_request_runs_at_once_and_gets_its_rows():
    model = SlowModel()
    result = await batcher(model).submit(images(3.0, 2), deadline())
    assert model.batches == [2]
    np.testing.assert_array_equal(result.probabilities, [[6.0], [6.0]])
    assert result.batch_images == 2 and result.queue_ms < 50


async def test_a_lone_request_on_an_idle_model_runs_inside_submit():
    """No queue and no batcher task: at one client their two event-loop passes cost 0.15-0.2 ms."""
    model = SlowModel()
    b = batcher(model, alone=lambda: True, inline_up_to=8)
    result = await b.submit(images(2.0), deadline())
    assert b.worker is None and model.batches == [1] and result.queue_ms == 0
    np.testing.assert_array_equal(result.probabilities, [[4.0]])


async def test_a_lone_request_queues_when_the_model_cannot_take_it_on_the_loop():
    model = SlowModel()
    b = batcher(model, alone=lambda: True)  # nothing runs on the loop: the executor takes every batch
    result = await b.submit(images(2.0), deadline())
    assert b.worker is not None and model.batches == [1] and result.queue_ms > 0


async def test_a_request_that_is_not_alone_waits_for_the_others_of_its_pass():
    model = SlowModel()
    b = batcher(model, alone=lambda: False, inline_up_to=8)
    await asyncio.gather(*(b.submit(images(1.0), deadline()) for _ in range(3)))
    assert model.batches == [3]


async def test_requests_queued_while_the_model_is_busy_share_the_next_batch():
    model = SlowModel(seconds=0.05)
    b = batcher(model)
    first = asyncio.create_task(b.submit(images(0.0), deadline()))
    await asyncio.sleep(0.01)  # the first request is computing, alone
    rest = await asyncio.gather(*(b.submit(images(float(i)), deadline()) for i in range(1, 7)))
    results = [await first, *rest]
    assert model.batches == [1, 6]
    for i, result in enumerate(results):
        assert result.probabilities[0, 0] == 2.0 * i, "each caller gets its own rows back"


async def test_batches_never_exceed_the_maximum():
    model = SlowModel(seconds=0.02)
    b = batcher(model, max_batch_size=4)
    await asyncio.gather(*(b.submit(images(1.0, 3), deadline()) for _ in range(5)))
    assert max(model.batches) <= 4 and sum(model.batches) == 15


async def test_a_queue_delay_fills_batches_at_low_load():
    model = SlowModel()
    b = batcher(model, max_queue_delay_ms=50)

    async def later(delay: float):
        await asyncio.sleep(delay)
        return await b.submit(images(1.0), deadline())

    await asyncio.gather(later(0), later(0.01), later(0.02))
    assert model.batches == [3]


async def test_a_full_queue_refuses_at_once():
    model = SlowModel(seconds=0.2)
    b = batcher(model, max_queue_images=4)
    first = asyncio.create_task(b.submit(images(1.0, 4), deadline()))
    await asyncio.sleep(0.05)  # the first job is running; the queue is empty again
    queued = [asyncio.create_task(b.submit(images(1.0, 2), deadline())) for _ in range(2)]
    await asyncio.sleep(0)
    started = time.perf_counter()
    with pytest.raises(Overloaded, match="limit 4"):
        await b.submit(images(1.0), deadline())
    assert time.perf_counter() - started < 0.05
    await asyncio.gather(first, *queued)


def test_a_request_larger_than_the_whole_queue_is_too_large_not_told_to_retry():
    b = batcher(SlowModel(seconds=0.2), max_queue_images=4)
    with pytest.raises(TooLarge, match="queues at most 4") as caught:
        b.check_room(5)
    assert caught.value.retry_after is None and caught.value.status == 413
    b.check_room(4)  # fits an empty queue


async def test_a_request_whose_deadline_the_work_queued_ahead_would_pass_is_refused_at_once():
    """Full batches of 4 take 0.1 s. With one batch computing and nine images queued, a request starts after the
    next two full batches (0.2 s) at the soonest: with 150 ms left it could only wait for its 504."""
    b = batcher(SlowModel(seconds=0.1), max_batch_size=4, full_batch_seconds=0.1)
    queued = [asyncio.create_task(b.submit(images(1.0), deadline())) for _ in range(13)]
    await asyncio.sleep(0.02)  # the first four compute, nine wait
    with pytest.raises(Overloaded, match=r"9 images queued, at least 200 ms of work, and this request has 1[45]\d ms"):
        b.check_room(1, deadline(0.15))
    b.check_room(1, deadline(1.0))  # time enough: admitted, and served
    served = await b.submit(images(3.0), deadline(1.0))
    assert served.probabilities[0, 0] == 6.0
    await asyncio.gather(*queued)


async def test_with_less_than_a_full_batch_queued_a_request_out_of_time_is_left_to_its_504():
    b = batcher(SlowModel(seconds=0.1), max_batch_size=4, full_batch_seconds=0.1)
    b.check_room(1, deadline(-0.01))  # no work ahead: not refused for now, but dropped unrun at its deadline
    with pytest.raises(DeadlineExceeded, match="reached the queue past its deadline \\(reading and decoding"):
        await b.submit(images(1.0), deadline(-0.01))  # the time went before the queue: it does not say it queued


def test_a_full_batch_begins_at_the_least_the_warm_up_says():
    """On the CPU the largest sizes are timed once, cold: here batch 8 took 0.4 s, but batch 4 0.12."""
    assert full_batch_estimate({1: 0.05, 4: 0.12, 8: 0.4}, 8) == pytest.approx(0.24)
    assert full_batch_estimate({}, 8) == 0.0


async def test_what_a_full_batch_costs_is_learnt_from_the_full_batches_that_ran():
    model = SlowModel(seconds=0.1)
    b = batcher(model, max_batch_size=4)
    assert b.full_batch_seconds == 0.0  # unknown (no warm-up): no request is refused for time
    await asyncio.gather(*(b.submit(images(1.0), deadline()) for _ in range(3)))
    assert b.full_batch_seconds == 0.0, "batches of fewer than four say nothing of a full one"
    for _ in range(3):
        await asyncio.gather(*(b.submit(images(1.0), deadline()) for _ in range(4)))
    assert model.batches[-3:] == [4, 4, 4] and 0.1 <= b.full_batch_seconds < 0.12


async def test_a_request_past_its_deadline_is_dropped_without_running():
    model = SlowModel(seconds=0.2)
    b = batcher(model)
    busy = asyncio.create_task(b.submit(images(1.0), deadline()))
    await asyncio.sleep(0.02)
    with pytest.raises(DeadlineExceeded, match="past the deadline"):
        await b.submit(images(5.0), deadline(0.05))
    await busy
    assert model.batches == [1], "the late request never reached the model"


async def test_a_model_that_fails_on_every_run_fails_each_caller_with_its_reason():
    def broken(batch):
        raise RuntimeError("CUDA failure 700: an illegal memory access was encountered")

    b = batcher(broken)
    results = await asyncio.gather(*(b.submit(images(1.0), deadline()) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ModelRunFailed) for r in results)
    assert results[0].message == "model m/1 failed to run this request's images: CUDA failure 700: an illegal memory " \
                                 "access was encountered"
    assert (results[0].status, results[0].grpc_code) == (500, "INTERNAL")


class BreaksOnNegatives(SlowModel):
    """Fails any batch that holds a negative value, as an operator fails on values it refuses."""

    def __call__(self, batch: np.ndarray):
        if (batch < 0).any():
            time.sleep(self.seconds)
            self.batches.append(-len(batch))
            raise RuntimeError("INVALID_ARGUMENT : indices element out of data bounds")
        return super().__call__(batch)


async def test_a_request_that_breaks_the_model_fails_alone_and_its_batch_is_answered():
    model = BreaksOnNegatives(seconds=0.05)
    b = batcher(model)
    busy = asyncio.create_task(b.submit(images(0.5), deadline()))  # the next eight queue behind it: one batch
    await asyncio.sleep(0.01)
    values = [1.0, 2.0, -1.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    results = await asyncio.gather(*(b.submit(images(v), deadline()) for v in values), return_exceptions=True)
    await busy
    assert isinstance(results[2], ModelRunFailed) and "out of data bounds" in results[2].message
    assert [float(r.probabilities[0, 0]) for i, r in enumerate(results) if i != 2] == [2 * v for v in values if v > 0]
    assert model.batches == [1, -8, -4, 2, -2, -1, 1, 4], "halved down to the breaking request alone"


async def test_a_lone_request_that_breaks_the_model_gets_its_reason():
    b = batcher(BreaksOnNegatives(), inline_up_to=8, alone=lambda: True)
    with pytest.raises(ModelRunFailed, match="out of data bounds"):
        await b.submit(images(-1.0), deadline())
    assert float((await b.submit(images(1.0), deadline())).probabilities[0, 0]) == 2.0
    assert b.worker is None, "both ran inside submit, alone"


async def test_on_a_lost_device_a_failed_batch_answers_every_caller_at_once_to_retry_elsewhere():
    runs, lost = [], []

    def broken(batch):
        runs.append(len(batch))
        raise RuntimeError("CUDA failure 700: an illegal memory access was encountered")

    b = batcher(broken, device_lost=lambda exc: lost.append(exc) or True)
    results = await asyncio.gather(*(b.submit(images(1.0), deadline()) for _ in range(4)), return_exceptions=True)
    assert runs == [4], "no halves: every run would fail the same way"
    assert all(isinstance(r, DeviceLost) and r.message == "model m/1: this worker's GPU is lost (CUDA failure 700: an "
               "illegal memory access was encountered); it stops and the server starts another: retry" for r in results)
    assert (results[0].status, results[0].grpc_code, results[0].headers()) == (503, "UNAVAILABLE", {"Retry-After": "1"})
    assert lost


async def test_a_request_left_alone_by_a_failing_one_whose_caller_went_is_run_not_failed():
    model = BreaksOnNegatives(seconds=0.1)
    b = batcher(model)
    busy = asyncio.create_task(b.submit(images(0.5), deadline()))
    await asyncio.sleep(0.01)
    breaking = asyncio.create_task(b.submit(images(-1.0), deadline()))
    good = asyncio.create_task(b.submit(images(2.0), deadline()))
    await asyncio.sleep(0.15)  # the two run together, and fail
    breaking.cancel()  # its caller leaves meanwhile
    assert float((await good).probabilities[0, 0]) == 4.0
    await busy
    assert model.batches == [1, -2, 1]


async def test_clients_coming_back_after_a_batch_are_regathered_into_one():
    """After a batch of 4, the next batch waits (up to a tenth of 4's compute) until 4 are queued again."""
    model = SlowModel(seconds=0.2)
    b = batcher(model)
    await asyncio.gather(*(b.submit(images(1.0), deadline()) for _ in range(4)))  # one batch of 4
    assert model.batches == [4]

    async def comes_back(delay: float):
        await asyncio.sleep(delay)
        return await b.submit(images(1.0), deadline())

    began = time.perf_counter()
    await asyncio.gather(*(comes_back(0.002 * i) for i in range(4)))  # within 6 ms, well inside 20 ms
    assert model.batches == [4, 4]
    assert time.perf_counter() - began < 0.2 + 0.1


async def test_requests_submitted_in_the_same_loop_pass_share_a_batch():
    """The batcher's task, woken by the first of them, lets the others of that pass queue before it takes
    a batch smaller than the last: under perf_analyzer this took LeNet-5's batches from 8 to 23 images."""
    model = SlowModel()  # too fast for a regathering wait
    b = batcher(model)
    await asyncio.gather(*(b.submit(images(1.0), deadline()) for _ in range(4)))

    async def one_pass_later():
        await asyncio.sleep(0)
        return await b.submit(images(1.0), deadline())

    await asyncio.gather(b.submit(images(1.0), deadline()), one_pass_later(), one_pass_later())
    assert model.batches == [4, 3]


async def test_the_regathering_wait_ends_after_a_tenth_of_the_last_compute():
    model = SlowModel(seconds=0.2)
    b = batcher(model)
    await asyncio.gather(*(b.submit(images(1.0), deadline()) for _ in range(4)))
    result = await b.submit(images(1.0), deadline())  # nobody else comes back
    assert model.batches == [4, 1]
    assert 15 <= result.queue_ms < 100  # waited about 20 ms, not for ever


async def test_grpc_calls_regather_for_up_to_a_whole_compute_of_the_last_batch():
    """gRPC hands the worker one call per loop pass, so its clients come back later than a tenth of a compute:
    calls 40-100 ms after a 200 ms batch of 4 still make one batch of 4."""
    model = SlowModel(seconds=0.2)
    b = batcher(model)
    await asyncio.gather(*(grpc_call(b) for _ in range(4)))
    assert model.batches == [4]
    results = await asyncio.gather(*(grpc_call(b, after=0.04 + 0.02 * i) for i in range(4)))
    assert model.batches == [4, 4]
    assert results[-1].queue_ms < 100  # the fourth arrival ended the wait, not the timer


async def test_no_wait_for_company_makes_a_request_miss_its_deadline():
    """A gRPC call due to start within 50 ms runs in time, though the regathering wait could last 200 ms and the
    queue delay half a second."""
    model = SlowModel(seconds=0.2)
    b = batcher(model, max_queue_delay_ms=500)
    await asyncio.gather(*(grpc_call(b) for _ in range(4)))
    # would raise DeadlineExceeded had it waited for company until then
    result = await asyncio.create_task(grpc_call(b, due_in=0.05))
    assert model.batches == [4, 1]
    assert result.queue_ms < 50


class ThreadRecordingModel:
    """Returns its input; records the name of the thread each batch ran on."""

    def __init__(self):
        self.threads: list[str] = []

    def __call__(self, batch: np.ndarray):
        self.threads.append(threading.current_thread().name)
        return batch.reshape(len(batch), -1), None


def batcher_on_named_executor(model, inline_up_to: int) -> AdaptiveBatcher:
    return AdaptiveBatcher("m/1", model, ThreadPoolExecutor(1, thread_name_prefix="executor"), max_batch_size=8,
                           inline_up_to=inline_up_to)


async def test_tiny_batches_run_on_the_event_loop_others_on_the_executor():
    model = ThreadRecordingModel()
    b = batcher_on_named_executor(model, inline_up_to=2)
    await b.submit(images(1.0, 2), deadline())
    await b.submit(images(1.0, 3), deadline())
    assert model.threads == [threading.current_thread().name, "executor_0"]


async def test_a_batch_holding_a_call_that_arrives_one_per_pass_never_runs_on_the_event_loop():
    """gRPC's calls reach the worker one per loop pass: a batch on the loop would keep the next one out."""
    model = ThreadRecordingModel()
    b = batcher_on_named_executor(model, inline_up_to=8)
    await asyncio.create_task(grpc_call(b))
    await b.submit(images(1.0), deadline())
    assert model.threads == ["executor_0", threading.current_thread().name]


def test_inline_sizes_come_from_warm_up_timings():
    assert inline_up_to({1: 0.0001, 2: 0.0003, 4: 0.0015, 8: 0.004}) == 4
    assert inline_up_to({1: 0.006, 2: 0.009}) == 0
    assert inline_up_to({}) == 0
