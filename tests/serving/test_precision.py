"""precision: auto on the CPU serves the fastest variant whose card metrics are within tolerance of FP32's,
on the test split and on every robustness condition the card records; a variant outside it is never timed."""

import json
import shutil

import pytest

from cnnserve.contract.card import file_sha256
from cnnserve.serving.precision import MARGIN, Tolerance, accuracy_shortfall, choose
from loadtests.local_server import running_server

TOLERANCE = Tolerance(accuracy=0.005, mean_iou=0.01)


def card(int8_split: dict | None, int8_conditions: dict | None) -> dict:
    files = {"fp32": {"file": "model.onnx"}}
    if int8_split is not None:
        files["int8"] = {"file": "model.int8.onnx", "derived": True, "metrics": int8_split}
        if int8_conditions is not None:
            files["int8"]["conditions"] = {"results": int8_conditions}
    conditions = {"square": {"accuracy": 0.98, "mean_iou": 0.90}, "dark on light": {"accuracy": 0.97, "mean_iou": 0.88}}
    return {"metrics": {"accuracy": 0.92, "mean_iou": 0.85, "conditions": {"results": conditions}}, "files": files}


WITHIN = {"square": {"accuracy": 0.976, "mean_iou": 0.895}, "dark on light": {"accuracy": 0.97, "mean_iou": 0.87}}


def test_a_variant_within_tolerance_everywhere_is_a_candidate():
    assert accuracy_shortfall(card({"accuracy": 0.916, "mean_iou": 0.841}, WITHIN), "int8", TOLERANCE) is None


def test_fp32_is_always_a_candidate():
    assert accuracy_shortfall(card(None, None), "fp32", TOLERANCE) is None


@pytest.mark.parametrize(("split", "conditions", "said"), [
    ({"accuracy": 0.90, "mean_iou": 0.85}, WITHIN, "accuracy on test split is 0.9000 against 0.9200"),
    ({"accuracy": 0.92, "mean_iou": 0.80}, WITHIN, "mean_iou on test split"),
    ({"accuracy": 0.92, "mean_iou": 0.85}, {**WITHIN, "dark on light": {"accuracy": 0.95, "mean_iou": 0.88}},
     "accuracy on dark on light is 0.9500"),
    ({"accuracy": 0.92, "mean_iou": 0.85}, None, "no accuracy of int8 on square"),
    ({"accuracy": 0.92, "mean_iou": 0.85}, {"square": WITHIN["square"]}, "no accuracy of int8 on dark on light"),
], ids=["split-accuracy", "split-iou", "one-condition", "no-conditions", "a-condition-missing"])
def test_a_variant_short_anywhere_is_refused_with_where(split, conditions, said):
    assert said in accuracy_shortfall(card(split, conditions), "int8", TOLERANCE)


def test_the_fastest_variant_is_chosen_and_the_reason_gives_the_speed_up():
    choice = choose({"fp32": {1: 6.0, 64: 150.0}, "int8": {1: 2.0, 64: 70.0}}, {})
    assert choice.variant == "int8" and "2.54x faster than fp32" in choice.reason


def test_fp32_stays_unless_another_variant_beats_it_by_the_margin():
    assert choose({"fp32": {1: 1.0, 64: 10.0}, "int8": {1: 0.95, 64: 9.5}}, {}).variant == "fp32"
    assert choose({"fp32": {1: 1.0, 64: 10.0}, "int8": {1: 1.0 / MARGIN / 1.01, 64: 10.0 / MARGIN / 1.01}}, {}).variant == "int8"


def test_a_slower_variant_is_not_chosen():
    assert choose({"fp32": {1: 0.1, 64: 1.0}, "int8": {1: 0.3, 64: 3.0}}, {}).variant == "fp32"


@pytest.fixture(scope="module")
def weighed(tmp_path_factory):
    """A server on three copies of LeNet-5, each shipping an "int8" file (a copy of model.onnx, so as fast)
    whose card is within tolerance, short on one condition, or has no robustness figures."""
    from tests.committed import VERSIONS
    from tests.conftest import MODELS_DIR

    root = tmp_path_factory.mktemp("repo")
    source = MODELS_DIR / "lenet5-digits" / str(VERSIONS["lenet5-digits"])
    reference = json.loads((source / "card.json").read_text())["metrics"]
    shifted = {name: {**row, "accuracy": row["accuracy"] - 0.02} for name, row in reference["conditions"]["results"].items()}
    cases = {"within": reference["conditions"]["results"], "short": shifted, "unmeasured": None}
    for name, conditions in cases.items():
        folder = root / name / "1"
        shutil.copytree(source, folder)
        shutil.copy(folder / "model.onnx", folder / "model.int8.onnx")
        version = json.loads((folder / "card.json").read_text())
        version.update(name=name, version=1)
        version["files"]["int8"] = {"file": "model.int8.onnx", "sha256": file_sha256(folder / "model.int8.onnx"),
                                    "derived": True, "metrics": {k: reference[k] for k in ("accuracy", "mean_iou")}}
        if conditions is not None:
            version["files"]["int8"]["conditions"] = {"results": conditions}
        (folder / "card.json").write_text(json.dumps(version))
    with running_server(tmp_path_factory.mktemp("server"), models_dir=root, workers="1") as server:
        yield {m["name"]: m["versions"][0] for m in server.client.get("/models").json()["models"]}


def test_models_shows_the_timings_and_the_reason_behind_the_choice(weighed):
    choice = weighed["within"]["precision_choice"]
    assert weighed["within"]["precision"] == choice["variant"] in ("fp32", "int8")
    assert set(choice["timings_ms"]) == {"fp32", "int8"} and choice["reason"] and not choice["not_candidates"]
    assert all(set(t) == {"1", "64"} and all(ms > 0 for ms in t.values()) for t in choice["timings_ms"].values())


@pytest.mark.parametrize(("model", "why"), [("short", "accuracy on square is"), ("unmeasured", "no accuracy of int8")])
def test_a_variant_outside_the_tolerance_is_not_chosen_and_models_says_why(weighed, model, why):
    version = weighed[model]
    assert version["precision"] == "fp32"
    assert set(version["precision_choice"]["timings_ms"]) == {"fp32"}, "never timed"
    assert why in version["precision_choice"]["not_candidates"]["int8"]
