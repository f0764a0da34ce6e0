"""The committed model repository: each model meets the contract, matches its
card, reaches the accuracy and IoU its card claims (re-measured here), and its
card records the robustness suite's per-condition results at the bar the model
is held to."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cnnserve.contract.card import CARD_FILE, MODEL_FILE, file_sha256
from cnnserve.serving.precision import Tolerance
from cnnserve.training.data import digits_task
from cnnserve.training.export import cpu_session, onnx_predictor
from cnnserve.training.train import evaluate
from loadtests.accuracy import judged
from loadtests.digit_images import CONDITIONS
from tests.committed import NAMES as COMMITTED
from tests.committed import VERSIONS

MODELS = Path(__file__).resolve().parents[2] / "models"
MAX_FILE_BYTES = 25 * 1024 * 1024  # the whole tracked tree stays under 50 MiB


def card_of(name: str) -> tuple[Path, dict]:
    folder = MODELS / name / str(VERSIONS[name])
    return folder, json.loads((folder / CARD_FILE).read_text())


# Issue 18's bar missed, as measured (270 digits per condition): a model listed here is expected to fail the bar;
# strict, so a model that meets it fails here until its mark goes. Every committed model meets it now.
SHORT_OF_THE_BAR: dict[str, str] = {}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=SHORT_OF_THE_BAR[n])) if n in SHORT_OF_THE_BAR else n
    for n in COMMITTED
])
def test_card_records_every_condition_at_the_models_bar(name):
    _, card = card_of(name)
    assert card["input"]["resize"] == "letterbox"
    results = card["metrics"]["conditions"]["results"]
    assert set(results) == {c.name for c in CONDITIONS}
    for condition in CONDITIONS:
        row, bar = results[condition.name], judged(name, condition)
        assert row["images"] >= 100
        if bar:
            assert row["accuracy"] >= bar[0] and row["mean_iou"] >= bar[1], f"{condition.name}: {row}"


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_file_matches_its_card_and_derived_variants_are_not_committed(name):
    folder, card = card_of(name)
    fp32 = card["files"]["fp32"]
    assert fp32["file"] == MODEL_FILE and not fp32["derived"]
    assert (folder / MODEL_FILE).stat().st_size < MAX_FILE_BYTES
    assert file_sha256(folder / MODEL_FILE) == fp32["sha256"]
    tracked = subprocess.run(["git", "ls-files", str(folder)], capture_output=True, text=True, check=True).stdout
    for variant, entry in card["files"].items():
        assert (entry["file"] in tracked) == (variant == "fp32"), f"{entry['file']} derived={entry['derived']}"


@pytest.mark.parametrize("name", COMMITTED)
def test_weights_stored_compactly_are_as_accurate_as_float32(name):
    """By the measure precision auto holds every variant to (``Tolerance``: half a point of accuracy, 0.01 of
    mean IoU). lenet5-digits/4's float16 weights cost 2 of 813 test pictures (0.7540 against 0.7565)."""
    _, card = card_of(name)
    full = card["onnx"]["weights"]["test_metrics_with_float32_weights"]
    tolerance = Tolerance()
    assert abs(card["metrics"]["accuracy"] - full["accuracy"]) <= tolerance.accuracy
    assert abs(card["metrics"]["mean_iou"] - full["mean_iou"]) <= tolerance.mean_iou


@pytest.mark.parametrize("name", COMMITTED)
def test_metrics_on_the_card_are_reproduced_by_onnx_runtime(name):
    folder, card = card_of(name)
    channels = card["input"]["channels"]
    size = card["input"]["shape"][-1]
    settings = card["training"]["settings"]
    task = digits_task(channels, size, seed=card["training"]["seed"], copies_per_epoch=settings["copies_per_epoch"])
    measured = evaluate(onnx_predictor(folder / MODEL_FILE), task.split("test"))
    assert measured["samples"] == card["metrics"]["samples"]
    assert measured["accuracy"] == pytest.approx(card["metrics"]["accuracy"], abs=2e-3)
    assert measured["mean_iou"] == pytest.approx(card["metrics"]["mean_iou"], abs=2e-3)


@pytest.mark.parametrize("name", COMMITTED)
def test_model_takes_any_batch_size(name):
    folder, card = card_of(name)
    session = cpu_session(folder / MODEL_FILE)
    shape = card["input"]["shape"][1:]
    for batch in (1, 7):
        probs, boxes = session.run(None, {"images": np.random.rand(batch, *shape).astype(np.float32)})
        assert probs.shape == (batch, len(card["labels"])) and boxes.shape == (batch, 4)
