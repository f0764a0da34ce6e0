"""The committed model repository: each model meets the contract, matches its
card, and reaches the accuracy and IoU its card claims, re-measured here."""

import json
from pathlib import Path

import numpy as np
import pytest

from service.contract import CARD_FILE, MODEL_FILE, file_sha256
from training.data import digits_task
from training.export import cpu_session, onnx_predictor
from training.train import evaluate

MODELS = Path(__file__).resolve().parents[2] / "models"
COMMITTED = ["lenet5-digits", "resnet18-digits", "vgg11-digits"]
MAX_FILE_BYTES = 50 * 1024 * 1024


def card_of(name: str) -> tuple[Path, dict]:
    folder = MODELS / name / "1"
    return folder, json.loads((folder / CARD_FILE).read_text())


@pytest.mark.parametrize("name", COMMITTED)
def test_card_claims_the_required_quality(name):
    _, card = card_of(name)
    assert card["metrics"]["split"] == "test"
    assert card["metrics"]["accuracy"] >= 0.97
    assert card["metrics"]["mean_iou"] >= 0.80


@pytest.mark.parametrize("name", COMMITTED)
def test_files_match_their_card_and_stay_small(name):
    folder, card = card_of(name)
    assert card["files"]["fp32"]["file"] == MODEL_FILE
    for entry in card["files"].values():
        path = folder / entry["file"]
        assert path.stat().st_size < MAX_FILE_BYTES
        assert file_sha256(path) == entry["sha256"]


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
