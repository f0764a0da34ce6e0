"""A model of fewer labels than the default top_k (a user's cat/dog model) answers every request that leaves top_k
out, listing all its labels: it got 400 "top_k must be between 1 and 3" on each, and the page never worked for it."""

import json

import numpy as np
import pytest
from onnx import helper, numpy_helper

from loadtests.local_server import running_server
from tests.committed import VERSIONS
from tests.conftest import MODELS_DIR
from tests.serving.helpers import GOOD, lenet5_rewired

LABELS = ["cat", "dog", "bird"]


def first_three_renormalised(graph) -> None:
    graph.initializer.append(numpy_helper.from_array(np.arange(3, dtype=np.int64), "first_three"))
    graph.node.extend([
        helper.make_node("Gather", ["unchecked", "first_three"], ["three"], axis=1),
        helper.make_node("ReduceSum", ["three"], ["total"], keepdims=1),
        helper.make_node("Div", ["three", "total"], ["probabilities"]),
    ])


def three_label_model(root):
    """The committed LeNet-5 reading only its first three classes, renormalised, with labels of its own."""
    committed = json.loads((MODELS_DIR / "lenet5-digits" / str(VERSIONS["lenet5-digits"]) / "card.json").read_text())
    outputs = [{**o, "shape": [-1, 3]} if o["name"] == "probabilities" else o for o in committed["outputs"]]
    return lenet5_rewired(root, "pets", first_three_renormalised, labels=LABELS, outputs=outputs)


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    models = three_label_model(tmp_path_factory.mktemp("repo"))
    with running_server(tmp_path_factory.mktemp("server"), models_dir=models, workers=1, precision="fp32") as server:
        yield server


@pytest.mark.parametrize("route", ["/predict", "/predict_batch", "/explain"])
def test_a_request_without_top_k_lists_every_label_of_a_model_with_fewer_than_the_default(pets, route):
    field = "images" if route == "/predict_batch" else "image"
    response = pets.client.post(route, files={field: ("d.png", GOOD)})
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"][0] if route == "/predict_batch" else response.json()
    assert sorted(entry["label"] for entry in answer["top_k"]) == sorted(LABELS)


def test_asking_for_more_labels_than_the_model_has_is_still_refused_by_name(pets):
    response = pets.client.post("/predict?top_k=4", files={"image": ("d.png", GOOD)})
    assert response.status_code == 400 and "top_k must be between 1 and 3 for pets, got 4" in response.json()["error"]
