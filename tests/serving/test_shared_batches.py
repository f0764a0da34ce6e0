"""Shared batches, between two ends in one process over a real Unix socket: a worker's batch comes back exactly as
the owner computed it; while the owner computes nothing the worker keeps its batch; whenever the owner cannot take
a batch (not listening, stopping, gone, not serving the model, or running it otherwise), the worker computes it
itself and tries the owner again later; a run that fails at the owner fails the batch with its reason; which
worker owns which GPU's batches. Then a real server of two workers that shares them: batches handed over, every
image counted once, every answer ONNX Runtime's own."""

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from cnnserve.serving import shared_batches
from cnnserve.serving.errors import ModelRunFailed, ModelUnavailable
from cnnserve.serving.runner import ModelRunner
from cnnserve.serving.shared_batches import (
    BatchOwner,
    DeviceBusy,
    Forwarder,
    ForwardingRunner,
    OwnerRunFailed,
    busy_path,
    owner_of,
    runs_as,
    socket_path,
)
from loadtests.local_server import running_server
from tests.committed import VERSIONS
from tests.conftest import MODELS_DIR
from tests.serving.helpers import metric_total, shared_folder_holding, v2_json

pytestmark = pytest.mark.anyio
FP32_ON_CPU = runs_as("fp32", "CPUExecutionProvider")


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def path(tmp_path):
    return socket_path(tmp_path, 0)


@pytest.fixture
def owner_computing(tmp_path):
    """The owner's busy mark, held as while it computes a batch (the forwarding end opens the file itself)."""
    with DeviceBusy(busy_path(tmp_path, 0)).computing():
        yield DeviceBusy(busy_path(tmp_path, 0))


def forwarding(path, busy: DeviceBusy, key: str = "plain/1", how: str = FP32_ON_CPU) -> ForwardingRunner:
    return ForwardingRunner(key, how, computed_here, Forwarder(path), busy)


def batch(n: int = 3) -> np.ndarray:
    return np.random.default_rng(n).random((n, 3, 8, 8), dtype=np.float32)


async def owner_computes(key: str, how: str, images: np.ndarray):
    """What the owner's batcher would answer: probabilities from the pixels, boxes for one model only."""
    await asyncio.sleep(0.5 if key == "slow/1" else 0)
    if key == "unserved/1" or how != FP32_ON_CPU:
        raise ModelUnavailable(f"model {key} is not loaded as {how} in the worker that owns the batches")
    if key == "broken/1":
        raise RuntimeError("ONNX Runtime failed: out of memory")
    if key == "refusing/1":
        raise ModelRunFailed(key, "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : indices element out of data bounds")
    probabilities = images.reshape(len(images), -1)[:, :10] * 2
    return probabilities, (images[:, 0, 0, :4] if key == "boxed/1" else None)


def computed_here(images: np.ndarray):
    return np.full((len(images), 10), -1.0, np.float32), None


async def test_a_forwarded_batch_comes_back_exactly_as_the_owner_computed_it(path):
    owner = BatchOwner(path, owner_computes, asyncio.get_running_loop())
    forwarder = Forwarder(path)
    try:
        images = batch()
        probabilities, boxes = await asyncio.to_thread(forwarder.forward, "boxed/1", FP32_ON_CPU, images)
        assert np.array_equal(probabilities, images.reshape(3, -1)[:, :10] * 2)
        assert np.array_equal(boxes, images[:, 0, 0, :4])
        probabilities, boxes = await asyncio.to_thread(forwarder.forward, "plain/1", FP32_ON_CPU, batch(64))
        assert probabilities.shape == (64, 10) and boxes is None
    finally:
        forwarder.close()
        owner.close()
    assert not path.exists()


async def test_while_the_owner_computes_nothing_the_worker_keeps_its_batch(path, tmp_path):
    owner = BatchOwner(path, owner_computes, asyncio.get_running_loop())
    runner = forwarding(path, DeviceBusy(busy_path(tmp_path, 0)))
    try:
        probabilities, _ = await asyncio.to_thread(runner, batch())
        assert runner.handed is None and (probabilities == -1).all()
        assert runner.forwarder.sock is None  # not even a connection
    finally:
        owner.close()


async def test_without_an_owner_the_worker_computes_its_batches_and_tries_again_later(path, owner_computing):
    runner = forwarding(path, owner_computing)
    probabilities, _ = await asyncio.to_thread(runner, batch())
    assert runner.handed == "this_worker" and (probabilities == -1).all()
    owner = BatchOwner(path, owner_computes, asyncio.get_running_loop())
    try:
        await asyncio.to_thread(runner, batch())
        assert runner.handed == "this_worker"  # not before RECONNECT_AFTER_S
        runner.forwarder.retry_at -= shared_batches.RECONNECT_AFTER_S  # as if that time had passed
        probabilities, _ = await asyncio.to_thread(runner, batch())
        assert runner.handed == "owner" and (probabilities >= 0).all()
    finally:
        runner.forwarder.close()
        owner.close()


async def test_a_model_the_owner_does_not_serve_is_computed_here_and_the_link_stays(path, owner_computing):
    owner = BatchOwner(path, owner_computes, asyncio.get_running_loop())
    runner = forwarding(path, owner_computing, "unserved/1")
    try:
        probabilities, _ = await asyncio.to_thread(runner, batch())
        assert runner.handed == "this_worker" and (probabilities == -1).all()
        connection = runner.forwarder.sock
        assert connection is not None
        await asyncio.to_thread(runner.forwarder.forward, "plain/1", FP32_ON_CPU, batch())
        assert runner.forwarder.sock is connection
    finally:
        runner.forwarder.close()
        owner.close()


async def test_a_run_that_fails_at_the_owner_fails_the_batch_with_its_reason(path):
    owner = BatchOwner(path, owner_computes, asyncio.get_running_loop())
    forwarder = Forwarder(path)
    try:
        with pytest.raises(OwnerRunFailed, match=r"^RuntimeError: ONNX Runtime failed: out of memory \(in the worker "
                                                 "that owns the device's batches\)$"):
            await asyncio.to_thread(forwarder.forward, "broken/1", FP32_ON_CPU, batch())
        # ONNX Runtime's reason comes back alone: the batch's own worker names the model once, as for its own runs
        with pytest.raises(OwnerRunFailed, match=r"^\[ONNXRuntimeError\] : 2 : INVALID_ARGUMENT : indices element "
                                                 r"out of data bounds \(in the worker that owns"):
            await asyncio.to_thread(forwarder.forward, "refusing/1", FP32_ON_CPU, batch())
    finally:
        forwarder.close()
        owner.close()


async def test_a_model_the_owner_runs_otherwise_is_computed_here(path, owner_computing):
    """With precision auto each worker picks its variant by its own timings; a GPU session can step down to the CPU
    in one worker only: the owner computes another worker's batch only as that worker would."""
    owner = BatchOwner(path, owner_computes, asyncio.get_running_loop())
    runner = forwarding(path, owner_computing, how=runs_as("int8", "CPUExecutionProvider"))
    try:
        probabilities, _ = await asyncio.to_thread(runner, batch())
        assert runner.handed == "this_worker" and (probabilities == -1).all()
    finally:
        runner.forwarder.close()
        owner.close()


async def test_an_owner_that_stops_with_a_batch_in_hand_leaves_it_to_its_worker(path, owner_computing):
    owner = BatchOwner(path, owner_computes, asyncio.get_running_loop())
    runner = forwarding(path, owner_computing, key="slow/1")
    try:
        handed = asyncio.create_task(asyncio.to_thread(runner, batch()))
        await asyncio.sleep(0.1)  # the owner holds the batch (it computes for 0.5 s)
        owner.close()
        probabilities, _ = await handed
        assert runner.handed == "this_worker" and (probabilities == -1).all()
    finally:
        runner.forwarder.close()

def test_an_owner_that_goes_away_mid_batch_leaves_the_batch_to_its_worker(path, owner_computing):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def accept_then_die():
        connection, _ = listener.accept()
        connection.recv(16)
        connection.close()

    dying = threading.Thread(target=accept_then_die)
    dying.start()
    runner = forwarding(path, owner_computing)
    try:
        probabilities, _ = runner(batch(256))
        assert runner.handed == "this_worker" and (probabilities == -1).all()
        assert runner.forwarder.sock is None  # reconnects after RECONNECT_AFTER_S
    finally:
        dying.join()
        listener.close()


def test_workers_share_the_owner_of_their_gpu_round_robin():
    """Worker i runs on GPU i mod GPUs (host.py), whose batches worker (i mod GPUs) computes; on the CPU, worker 0."""
    assert [owner_of(i, gpus=2) for i in range(8)] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert [owner_of(i, gpus=1) for i in range(4)] == [0, 0, 0, 0]
    assert [owner_of(i, gpus=0) for i in range(2)] == [0, 0]


def test_a_server_with_shared_batches_hands_batches_over_and_answers_as_onnx_runtime(tmp_path):
    model, version = "resnet18-digits", VERSIONS["resnet18-digits"]
    inputs = np.random.default_rng(5).random((96, 1, 3, 64, 64), dtype=np.float32)
    session = ort.InferenceSession(MODELS_DIR / model / str(version) / "model.onnx", providers=["CPUExecutionProvider"])
    expected = [session.run(["probabilities"], {"images": x})[0] for x in inputs]
    with running_server(tmp_path, workers="2", shared_batches="true", serve=model, precision="fp32") as server:
        shared_folder_holding(server, MODELS_DIR, {"batches-0.sock"})  # worker 0 takes batches from now on

        def infer(x: np.ndarray) -> np.ndarray:
            response = server.client.post(f"/v2/models/{model}/infer", json=v2_json(x))
            assert response.status_code == 200, response.text
            (probabilities,) = [o for o in response.json()["outputs"] if o["name"] == "probabilities"]
            return np.array(probabilities["data"], np.float32).reshape(probabilities["shape"])

        with ThreadPoolExecutor(max_workers=32) as pool:  # as many connections, which the kernel spreads over both
            answers = list(pool.map(infer, inputs))
        metrics = server.metrics()
        (listed,) = server.client.get("/models").json()["models"]
    assert all(np.allclose(got, want, atol=1e-5) for got, want in zip(answers, expected))
    labels = {"model": model, "version": str(version)}
    assert metric_total(metrics, "cnnserve_forwarded_batches_total", computed_by="owner", **labels) > 0
    assert metric_total(metrics, "cnnserve_batch_size_images_sum", **labels) == len(inputs)  # each counted once
    assert listed["versions"][0]["batching"]["computed_by_worker"] == 0


def test_the_owner_holds_its_busy_mark_while_a_batch_computes_and_only_then(tmp_path):
    seen = []

    class Session:
        def run(self, images):
            seen.append(DeviceBusy(busy_path(tmp_path, 0)).idle())
            return computed_here(images)

    runner = ModelRunner(Session(), inline_up_to=0, device_busy=DeviceBusy(busy_path(tmp_path, 0)))
    runner(batch())
    assert seen == [False] and DeviceBusy(busy_path(tmp_path, 0)).idle()
