"""From settings to a finished model version folder: train, export, check
parity, store the weights compactly, measure on the test split (through ONNX
Runtime, i.e. what is served), derive the INT8 and FP16 variants, and write the
card and training plot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from cnnserve.contract.card import CARD_FILE, MODEL_FILE, file_sha256

from .architectures import create_model
from .card import model_card, write_card
from .data import TaskData, card_test_split
from .export import COMPACT_MIN_ELEMENTS, check_parity, export_onnx, onnx_predictor, store_weights_fp16
from .train import Normalized, TrainConfig, evaluate, train
from .variants import derive_variants, export_variants

CHECKPOINTS = Path("runs")  # git-ignored: the trained torch weights, to re-export without retraining
FULL_PRECISION_FILE = "model.float32.onnx"  # the export before its weights are stored compactly; removed
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def measure_variants(files: dict[str, Path], test, log=print) -> dict[str, dict]:
    """Each variant file's accuracy and IoU on the test split, through ONNX Runtime, logged."""
    measured = {}
    for variant, path in files.items():
        measured[variant] = metrics = evaluate(onnx_predictor(path), test)
        log(f"test split, {variant:>4} ONNX: accuracy {metrics['accuracy']:.4f}  mean IoU {metrics['mean_iou']:.4f}")
    return measured


def rederive_variants(folder: Path, log=print) -> None:
    """Derive a version's variants again and record what they are on its card: file, sha256, size and test-split
    metrics. A variant whose file changed loses its robustness figures (``files.<variant>.conditions``), which
    were measured on the old file: ``python -m loadtests.accuracy --precision <variant> --write-cards`` again."""
    card = json.loads((folder / CARD_FILE).read_text())
    test = card_test_split(card)
    for variant, path in derive_variants(folder, log).items():
        if variant == "fp32":
            continue
        entry = card["files"].setdefault(variant, {"file": path.name, "derived": True})
        sha = file_sha256(path)
        if entry.get("sha256") != sha and entry.pop("conditions", None) is not None:
            log(f"{path.name} changed: its robustness figures are dropped from the card until measured again")
        entry.update(sha256=sha, bytes=path.stat().st_size, metrics=measure_variants({variant: path}, test, log)[variant])
    write_card(folder, card)


def build_version(config: TrainConfig, task: TaskData, out_root: Path, version: int, command: str, log=print,
                  device: str = "cpu", dry_run: bool = False) -> Path:
    """Train, export, measure and card one version; a ``dry_run``'s card says it is a smoke test, not a model."""
    started = time.perf_counter()
    model, history = train(config, task, log=log, device=device)
    train_seconds = time.perf_counter() - started
    folder = out_root / config.name / str(version)
    CHECKPOINTS.mkdir(exist_ok=True)
    torch.save(model.state_dict(), CHECKPOINTS / f"{config.name}-{version}.pt")
    full = folder / FULL_PRECISION_FILE
    export_onnx(model, full, config.channels, config.input_size)
    parity = check_parity(model, full, config.channels, config.input_size)
    log(f"parity ONNX Runtime vs torch (max abs diff): {parity['max_abs_diff']}")
    test = task.split("test")
    store_weights_fp16(full, folder / MODEL_FILE)
    full_metrics = evaluate(onnx_predictor(full), test)
    full.unlink()
    log(f"test split, float32 weights: accuracy {full_metrics['accuracy']:.4f}  mean IoU {full_metrics['mean_iou']:.4f}")

    files = export_variants(folder, task)
    variant_metrics = measure_variants(files, test, log)

    card = model_card(
        name=config.name,
        version=version,
        architecture=config.arch,
        architecture_options=config.options,
        labels=task.labels,
        channels=config.channels,
        input_size=config.input_size,
        mean=[round(v, 6) for v in model.mean.flatten().tolist()],
        std=[round(v, 6) for v in model.std.flatten().tolist()],
        files=files,
        training={
            "data": task.description,
            "seed": config.seed,
            "epochs": config.epochs,
            "settings": {k: v for k, v in vars(config).items() if k not in ("name", "arch", "options")},
            "command": command,
            "seconds": round(train_seconds, 1),
            "history": history,
        },
        metrics={"split": "test", **variant_metrics["fp32"]},
        variant_metrics=variant_metrics,
        parity=parity,
        weights={"stored": f"float16 behind Cast to float32 (tensors of {COMPACT_MIN_ELEMENTS} elements or more)",
                 "compute": "float32",
                 "test_metrics_with_float32_weights": full_metrics},
    )
    if dry_run:
        card |= {"trained": False, "dry_run": True,
                 "description": f"DRY RUN, a smoke test: one short epoch on {task.description}"}
    write_card(folder, card)
    plot_history(history, folder / "training.png", config.name)
    log(f"wrote {folder} in {time.perf_counter() - started:.0f} s")
    return folder


def build_untrained(arch: str, size: int, classes: int, out_root: Path, log=print) -> Path:
    """An ImageNet-shaped export with random weights, for throughput benchmarks only."""
    torch.manual_seed(0)
    net = create_model(arch, num_classes=classes, in_channels=3, input_size=size)
    model = Normalized(net, IMAGENET_MEAN, IMAGENET_STD).eval()
    name = f"{arch}-imagenet-untrained"
    folder = out_root / name / "1"
    export_onnx(model, folder / MODEL_FILE, 3, size)
    parity = check_parity(model, folder / MODEL_FILE, 3, size)
    log(f"parity ONNX Runtime vs torch (max abs diff): {parity['max_abs_diff']}")
    card = model_card(
        name=name,
        version=1,
        architecture=arch,
        architecture_options={},
        labels=[f"class_{i}" for i in range(classes)],
        channels=3,
        input_size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        files={"fp32": folder / MODEL_FILE},
        training=None,
        metrics=None,
        variant_metrics={},
        parity=parity,
    )
    write_card(folder, card)
    log(f"wrote {folder} (UNTRAINED, benchmark only)")
    return folder


def plot_history(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(title="training loss", xlabel="epoch")
    right.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="accuracy")
    right.plot(epochs, [h["val_mean_iou"] for h in history], marker="s", label="mean IoU")
    right.set(title="validation", xlabel="epoch", ylim=(0, 1))
    right.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
