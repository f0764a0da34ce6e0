"""REST and gRPC requests for one model ride in the same batches, and batching
changes no answer: each matches the same image sent alone."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from cnnserve.contract.images import decode_image
from cnnserve.serving.v2 import inference_pb2_grpc as pb_grpc
from loadtests.digit_images import digit_files
from loadtests.local_server import running_server
from tests.serving.helpers import grpc_request

MODEL = "resnet18-digits"
PER_PROTOCOL = 24


def grpc_infer(stub, images: np.ndarray) -> tuple[np.ndarray, int]:
    response = stub.ModelInfer(grpc_request(MODEL, images, ["probabilities"]))
    probabilities = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(len(images), -1)
    return probabilities, response.parameters["batch_images"].int64_param


def rest_predict(server, data: bytes) -> dict:
    response = server.client.post("/predict", files={"image": ("d.png", data)}, data={"model": MODEL, "top_k": "10"})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_mixed_burst_shares_batches_and_every_answer_matches_the_image_alone(one_worker):
    files = digit_files(3, 64, count=PER_PROTOCOL, seed=21)
    tensors = [decode_image(f.data, 3, 64, 64, 10**7)[0][None] for f in files]
    with grpc.insecure_channel(one_worker.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        alone_rest = [rest_predict(one_worker, f.data) for f in files]
        alone_grpc = [grpc_infer(stub, t)[0] for t in tensors]

        # Occupy the worker with a full batch so the burst queues up behind it.
        blocker = threading.Thread(target=grpc_infer, args=(stub, np.concatenate(tensors * 3)[:64]))
        blocker.start()
        time.sleep(0.02)
        with ThreadPoolExecutor(max_workers=2 * PER_PROTOCOL) as pool:
            rest = [pool.submit(rest_predict, one_worker, f.data) for f in files]
            grpc_calls = [pool.submit(grpc_infer, stub, t) for t in tensors]
            rest_answers = [r.result() for r in rest]
            grpc_answers = [g.result() for g in grpc_calls]
        blocker.join()

    largest = max([a["timings"]["batch_images"] for a in rest_answers] + [b for _, b in grpc_answers])
    assert largest > PER_PROTOCOL, f"largest batch {largest}: no batch held both REST and gRPC requests"

    for burst, alone in zip(rest_answers, alone_rest):
        assert burst["label"] == alone["label"]
        assert [t["probability"] for t in burst["top_k"]] == pytest.approx(
            [t["probability"] for t in alone["top_k"]], abs=1e-4)
    for (burst, _), alone in zip(grpc_answers, alone_grpc):
        np.testing.assert_allclose(burst, alone, atol=1e-5)


def test_many_calls_on_one_grpc_channel_form_batches(tmp_path):
    """Every call of one channel lands on one worker (one HTTP/2 connection). While the other worker idled, that
    worker ran each call alone on every core, on its event loop, so no call could arrive meanwhile: batches of
    1.04 at 64 concurrent calls. Queued batches now run off the loop."""
    concurrency, calls = 32, 8
    tensor = decode_image(digit_files(3, 64, count=1, seed=5)[0].data, 3, 64, 64, 10**7)[0][None]
    with running_server(tmp_path, serve=MODEL) as server, grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        grpc_infer(stub, tensor)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            sizes = list(pool.map(lambda _: [grpc_infer(stub, tensor)[1] for _ in range(calls)], range(concurrency)))
    sizes = [size for client in sizes for size in client]
    assert np.mean(sizes) >= 4, f"mean batch {np.mean(sizes):.2f} seen by {len(sizes)} calls on one channel"
