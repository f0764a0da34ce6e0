"""Exports follow the model contract and match torch through ONNX Runtime;
weights stored compactly keep the outputs; the dry-run pipeline produces a
complete, servable version folder; derived variants are reproducible."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cnnserve.contract.card import CARD_FILE, MODEL_FILE, VARIANT_FILES, file_sha256
from cnnserve.training.__main__ import main as training_main
from cnnserve.training.architectures import create_model, list_models
from cnnserve.training.export import PARITY_TOLERANCE, check_parity, cpu_session, export_onnx, store_weights_fp16
from cnnserve.training.recipes import RECIPES
from cnnserve.training.train import Normalized
from cnnserve.training.variants import derive_variants, kept_float, main as variants_main
from tests.committed import VERSIONS

MODELS = Path(__file__).resolve().parents[2] / "models"


# The ImageNet heads hold most of VGG's and AlexNet's weights (VGG-11's classifier and box head: 2 x 120 M at 7 x 7
# pooled features) and add nothing a narrow head does not test: the convolution stacks are what tell the
# configurations apart. Exporting the full heads took 30-38 s per VGG; the parameter counts are tested in full.
NARROW_HEADS = {"vgg": {"pool_size": 1, "classifier_width": 256}, "alexnet": {"classifier_width": 256}}


def narrow_head(name: str) -> dict:
    return next((options for prefix, options in NARROW_HEADS.items() if name.startswith(prefix)), {})


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_exports_with_torch_parity(tmp_path, name):
    torch.manual_seed(0)
    net = create_model(name, num_classes=10, in_channels=3, input_size=32, **narrow_head(name))
    model = Normalized(net, [0.2] * 3, [0.3] * 3).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, channels=3, size=32)
    report = check_parity(model, path, channels=3, size=32)
    diffs = [d for batch in report["max_abs_diff"].values() for d in batch.values()]
    assert len(diffs) == 4 and max(diffs) <= PARITY_TOLERANCE


def test_exported_graph_has_named_io_and_a_dynamic_batch_axis(tmp_path):
    model = Normalized(create_model("lenet5", num_classes=10, in_channels=1, input_size=32), [0.5], [0.5]).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, channels=1, size=32)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["probabilities", "boxes"]
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    probs, boxes = cpu_session(path).run(None, {"images": np.random.rand(5, 1, 32, 32).astype(np.float32)})
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert boxes.shape == (5, 4)


def test_classification_only_model_exports_probabilities_alone(tmp_path):
    net = create_model("lenet5", num_classes=3, in_channels=1, input_size=32, box_head=False)
    path = tmp_path / "model.onnx"
    export_onnx(Normalized(net, [0.5], [0.5]).eval(), path, channels=1, size=32)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["probabilities"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The module docstring's smoke run, ``train --recipe lenet5-digits --dry-run`` with no --out, in a working
    directory whose models/ holds the recipe's version (temporary folders under its own tmp/)."""
    cwd = tmp_path_factory.mktemp("cwd")
    committed = cwd / "models" / "lenet5-digits" / str(RECIPES["lenet5-digits"].version)
    committed.mkdir(parents=True)
    (committed / MODEL_FILE).write_bytes(b"the committed model")
    (committed / CARD_FILE).write_text('{"trained": true}')
    (cwd / "tmp").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cnnserve.training", "train", "--recipe", "lenet5-digits", "--dry-run"],
        cwd=cwd, env={**os.environ, "TMPDIR": str(cwd / "tmp")}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd, result.stdout


def test_a_dry_run_without_out_leaves_the_models_folder_alone_and_says_where_it_wrote(dry_run):
    cwd, stdout = dry_run
    assert {p.relative_to(cwd).as_posix(): p.read_bytes() for p in (cwd / "models").rglob("*") if p.is_file()} == {
        f"models/lenet5-digits/{RECIPES['lenet5-digits'].version}/{MODEL_FILE}": b"the committed model",
        f"models/lenet5-digits/{RECIPES['lenet5-digits'].version}/{CARD_FILE}": b'{"trained": true}'}
    written = re.search(r"dry run: writing under (\S+)", stdout)
    assert written and Path(written[1]).parent == cwd / "tmp"


def test_dry_run_writes_a_complete_version_folder_whose_card_says_so(dry_run):
    cwd, stdout = dry_run
    assert "parity ONNX Runtime vs torch" in stdout
    version = RECIPES["lenet5-digits"].version
    (folder,) = (cwd / "tmp").glob(f"cnnserve-dry-run-*/lenet5-digits/{version}")
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["name"] == "lenet5-digits" and card["version"] == version
    assert card["trained"] is False and card["dry_run"] is True and "DRY RUN" in card["description"]
    assert card["input"]["shape"] == [-1, 1, 32, 32] and card["input"]["resize"] == "letterbox"
    assert card["training"]["seed"] == 0 and "--dry-run" in card["training"]["command"]
    assert set(card["files"]) == set(VARIANT_FILES)
    for variant, entry in card["files"].items():
        assert entry["sha256"] == file_sha256(folder / entry["file"])
        assert 0 <= entry["metrics"]["accuracy"] <= 1
        assert entry["derived"] == (variant != "fp32")
    assert card["files"]["fp32"]["file"] == MODEL_FILE
    assert card["onnx"]["weights"]["compute"] == "float32"
    assert sorted(p.name for p in folder.glob("*.onnx")) == sorted(VARIANT_FILES.values()), "no stray exports"
    assert (folder / "training.png").stat().st_size > 0


def test_training_into_a_version_folder_that_holds_a_model_needs_overwrite(tmp_path, capsys):
    folder = tmp_path / "lenet5-digits" / "7"
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"a model")
    with pytest.raises(SystemExit, match=f"{folder} already holds a model.onnx; give --overwrite"):
        training_main(["train", "--recipe", "lenet5-digits", "--version", "7", "--out", str(tmp_path)])
    assert (folder / MODEL_FILE).read_bytes() == b"a model" and "training" not in capsys.readouterr().out


@pytest.mark.parametrize("recipe", ["alexnet-digits", "googlenet-digits"])
def test_the_newer_networks_recipes_train_export_and_measure_in_a_dry_run(tmp_path, recipe):
    """AlexNet's and GoogLeNet's digits recipes (GoogLeNet with its auxiliary heads in training) through the whole
    pipeline on a tiny subset."""
    result = subprocess.run(
        [sys.executable, "-m", "cnnserve.training", "train", "--recipe", recipe, "--dry-run", "--threads", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / recipe / "1" / CARD_FILE).read_text())
    assert card["architecture"] == RECIPES[recipe].arch and card["input"]["shape"] == [-1, 3, 64, 64]
    assert 0 <= card["files"]["fp32"]["metrics"]["accuracy"] <= 1


def test_weights_stored_as_float16_halve_the_file_and_keep_the_outputs(tmp_path):
    torch.manual_seed(0)
    model = Normalized(create_model("resnet18", num_classes=10, in_channels=3, input_size=32), [0.5] * 3, [0.2] * 3)
    export_onnx(model.eval(), tmp_path / "full.onnx", 3, 32)
    store_weights_fp16(tmp_path / "full.onnx", tmp_path / "compact.onnx")
    assert (tmp_path / "compact.onnx").stat().st_size < 0.55 * (tmp_path / "full.onnx").stat().st_size
    images = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    full, compact = (cpu_session(tmp_path / f).run(None, {"images": images}) for f in ("full.onnx", "compact.onnx"))
    assert [o.type for o in cpu_session(tmp_path / "compact.onnx").get_inputs()] == ["tensor(float)"]
    for a, b in zip(full, compact):
        np.testing.assert_allclose(a, b, atol=2e-3)


def test_derived_variants_of_a_committed_model_are_reproduced_exactly(tmp_path):
    """`python -m cnnserve.training derive` rebuilds the INT8 and FP16 files the card describes, byte for byte."""
    folder = tmp_path / "lenet5-digits"
    shutil.copytree(MODELS / "lenet5-digits" / str(VERSIONS["lenet5-digits"]), folder)
    card = json.loads((folder / CARD_FILE).read_text())
    for variant, path in derive_variants(folder, log=lambda line: None).items():
        assert file_sha256(path) == card["files"][variant]["sha256"], variant


def test_fp16_alone_is_derived_without_calibration_for_a_gpu_image(tmp_path, capsys):
    """What deploy/Dockerfile.cuda runs: the FP16 file, byte for byte as the card says, and no INT8 file (whose
    bytes depend on the ONNX Runtime release); run again with --missing, it finds nothing to do."""
    folder = tmp_path / "lenet5-digits"
    shutil.copytree(MODELS / "lenet5-digits" / str(VERSIONS["lenet5-digits"]), folder,
                    ignore=shutil.ignore_patterns("model.*.onnx"))  # derived files a checkout may hold
    card = json.loads((folder / CARD_FILE).read_text())
    assert variants_main(["--only", "fp16", "--missing", str(folder)]) == 0
    assert file_sha256(folder / VARIANT_FILES["fp16"]) == card["files"]["fp16"]["sha256"]
    assert not (folder / VARIANT_FILES["int8"]).exists()
    capsys.readouterr()
    assert variants_main(["--only", "fp16", "--missing", str(folder)]) == 0
    assert "deriving" not in capsys.readouterr().out


def test_int8_keeps_the_first_convolution_the_fully_connected_layers_and_the_box_head_in_float():
    """The layers whose quantization cost resnet18-digits and vgg11-digits accuracy or IoU (variants.kept_float)."""
    graph = onnx.load(str(MODELS / "resnet18-digits" / str(VERSIONS["resnet18-digits"]) / MODEL_FILE)).graph
    kept = set(kept_float(graph))
    nodes = {n.name: n for n in graph.node}
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    linears = {n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")}
    assert convs[0] in kept and not kept & set(convs[1:])
    assert len(linears) == 3 and linears <= kept  # the classifier and the box head's two
    producers = {out: n for n in graph.node for out in n.output}
    box_head_activation = producers[nodes["node_linear_2"].input[0]]  # the box head's hidden layer, walked back to
    assert box_head_activation.op_type == "Relu" and box_head_activation.name in kept
    assert {nodes[n].op_type for n in kept} >= {"Softmax", "Sigmoid"}
