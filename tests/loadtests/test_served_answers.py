"""The served-answers check (``make gpu-check``'s step 4): a real server's answers to distinct images, sent at once in
requests of several sizes, equal ONNX Runtime's in process on the same file; and an answer given to the wrong image
fails the check."""

import httpx
import numpy as np
import onnxruntime as ort

from loadtests.served_answers import REQUEST_SIZES, compare, served_probabilities, split
from tests.committed import VERSIONS
from tests.conftest import MODELS_DIR

MODEL = "resnet18-digits"


def test_requests_cycle_through_the_sizes_and_keep_every_image_in_order():
    images = np.arange(sum(REQUEST_SIZES) + 7, dtype=np.float32)[:, None]
    parts = split(images)
    assert [len(p) for p in parts] == [*REQUEST_SIZES, 1, 1, 1, 1, 2, 1]  # the last one takes what is left
    assert np.array_equal(np.concatenate(parts), images)


def in_process(server, images: np.ndarray) -> np.ndarray:
    """The probabilities of the file the server runs, from a plain ONNX Runtime session."""
    entry = next(m for m in httpx.get(f"{server.url}/models").json()["models"] if m["name"] == MODEL)
    card = f"{MODELS_DIR}/{MODEL}/{VERSIONS[MODEL]}"
    precision = entry["versions"][0]["precision"]
    session = ort.InferenceSession(f"{card}/model{'' if precision == 'fp32' else '.' + precision}.onnx",
                                   providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"images": images})[0]


def test_a_server_answers_each_image_as_its_model_does_alone(server):
    images = np.random.default_rng(3).random((60, 3, 64, 64), dtype=np.float32)
    reference = in_process(server, images)
    served = served_probabilities(server.url, MODEL, images)
    figures = compare(served, reference)
    assert figures["passed"] and figures["other_label"] == 0 and figures["largest_difference"] < 1e-4
    assert figures["neighbour_difference"] > 0.01  # a mix-up of rows would show
    shifted = compare(served, np.roll(reference, 1, axis=0))  # each image given its neighbour's answer
    assert not shifted["passed"] and shifted["largest_difference"] > 0.01
