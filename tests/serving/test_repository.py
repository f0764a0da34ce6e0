"""The model repository: discovery, highest-version default, and models that
fail their card are reported with a reason while the others still serve."""

import json

import pytest

from cnnserve.serving.errors import ModelNotFound, ModelUnavailable
from cnnserve.serving.repository import discover
from tests.committed import VERSIONS


def test_committed_models_are_discovered():
    from tests.conftest import MODELS_DIR

    repository = discover(MODELS_DIR)
    assert {"lenet5-digits", "resnet18-digits", "vgg11-digits"} <= set(repository.models)
    assert not repository.failures
    model = repository.resolve("lenet5-digits")
    assert model.input_shape == (1, 32, 32) and model.has_boxes and len(model.labels) == 10


def test_highest_version_is_the_default_and_others_resolve_by_number(repo_copy):
    committed = VERSIONS["lenet5-digits"]
    repo_copy("lenet5-digits")
    repo_copy("lenet5-digits", as_version=committed + 1)
    repository = discover(repo_copy.root)
    assert repository.resolve("lenet5-digits").version == committed + 1
    assert repository.resolve("lenet5-digits", committed).version == committed
    with pytest.raises(ModelNotFound, match=f"versions: {committed}, {committed + 1}"):
        repository.resolve("lenet5-digits", 1)


def test_unknown_model_names_the_served_ones(repo_copy):
    repo_copy("lenet5-digits")
    with pytest.raises(ModelNotFound, match="lenet5-digits"):
        discover(repo_copy.root).resolve("resnet-9000")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda folder: (folder / "card.json").unlink(), "card.json is missing"),
        (lambda folder: (folder / "card.json").write_text("{not json"), "not valid JSON"),
        (lambda folder: patch_card(folder, input={"shape": [-1, 5, 8, 8]}), "input shape"),
        (lambda folder: patch_card(folder, outputs=[{"name": "logits"}]), "outputs"),
        (lambda folder: (folder / "card.json").write_text("[1, 2]"), "must hold a JSON object, not list"),
        (lambda folder: patch_card(folder, input={"shape": [-1, 1, "32", 32]}), "input shape"),
        (lambda folder: patch_card(folder, input=[1]), "does not follow the contract"),
        (lambda folder: patch_card(folder, labels=10), "labels must be a list of strings"),
        (lambda folder: patch_card(folder, labels=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), "labels must be a list of strings"),
        (lambda folder: patch_card(folder, outputs=["probabilities"]), "does not follow the contract"),
        (lambda folder: ((folder / "card.json").unlink(), (folder / "card.json").mkdir()), "cannot be read"),
    ],
    ids=["no-card", "bad-json", "bad-shape", "bad-outputs", "a-list", "text-dimension", "input-a-list",
         "labels-a-number", "labels-not-text", "outputs-not-objects", "card-a-folder"],
)
def test_a_broken_card_is_reported_and_the_others_still_serve(repo_copy, damage, reason):
    repo_copy("lenet5-digits")
    damage(repo_copy("lenet5-digits", as_name="broken"))
    repository = discover(repo_copy.root)
    assert reason in repository.failures[f"broken/{VERSIONS['lenet5-digits']}"]
    assert repository.resolve("lenet5-digits").name == "lenet5-digits"
    with pytest.raises(ModelUnavailable, match=reason):
        repository.resolve("broken")


def test_only_folders_named_with_ascii_digits_are_versions(repo_copy):
    repo_copy("lenet5-digits")
    repo_copy("lenet5-digits", as_version="²")  # str.isdigit() says yes, int() says no
    repository = discover(repo_copy.root)
    assert list(repository.models["lenet5-digits"]) == [VERSIONS["lenet5-digits"]] and not repository.failures


@pytest.mark.parametrize("folder", ["0", "007", "1" * 19])
def test_a_version_folder_no_request_could_name_is_refused_with_the_rule(repo_copy, folder):
    repo_copy("lenet5-digits")
    repo_copy("lenet5-digits", as_version=folder)
    repository = discover(repo_copy.root)
    assert list(repository.models["lenet5-digits"]) == [VERSIONS["lenet5-digits"]]
    assert "without leading zeros" in repository.failures[f"lenet5-digits/{folder}"]


def test_a_name_the_file_system_cannot_hold_is_no_model_folder(repo_copy):
    repo_copy("lenet5-digits")
    repository = discover(repo_copy.root)
    assert not repository.has_folder("a" * 300) and not repository.has_folder("nul\0byte")
    assert repository.has_folder("lenet5-digits")


def test_classification_only_card_without_labels_counts_classes(repo_copy):
    folder = repo_copy("lenet5-digits")
    card = json.loads((folder / "card.json").read_text())
    del card["labels"]
    card["outputs"] = [{"name": "probabilities", "shape": [-1, 10]}]
    (folder / "card.json").write_text(json.dumps(card))
    model = discover(repo_copy.root).resolve("lenet5-digits")
    assert model.labels == [str(i) for i in range(10)] and not model.has_boxes


def patch_card(folder, **fields):
    card = json.loads((folder / "card.json").read_text())
    card.update(fields)
    (folder / "card.json").write_text(json.dumps(card))
