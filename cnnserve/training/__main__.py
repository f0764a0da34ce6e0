"""cnnserve training: train, export and card models for the model repository.

Usage:
    python -m cnnserve.training train --recipe resnet18-digits --overwrite   # retrain a committed model in place
    python -m cnnserve.training train --recipe lenet5-digits --dry-run   # tiny smoke run, into a temporary folder
    python -m cnnserve.training train --arch vgg11_bn --name my-vgg --channels 3 --input-size 64 \\
        --epochs 10 --data-dir path/to/folder                   # your own data
    python -m cnnserve.training derive models/resnet18-digits/2          # its INT8 and FP16 files (not committed)
    python -m cnnserve.training bench-models                              # untrained ImageNet-shaped exports
    python -m cnnserve.training list                                      # architectures and recipes
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from ..contract.card import MODEL_FILE
from ..machine import available_cores
from .architectures import list_models
from .data import digits_task, folder_task
from .pipeline import build_untrained, build_version, rederive_variants
from .recipes import RECIPES
from .train import TrainConfig
from .variants import derive_variants

DRY_RUN_DIGITS = 24
BENCH_MODELS = (("resnet50", 224), ("vgg16", 224))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cnnserve.training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train one model and export it to the model repository")
    tr.add_argument("--recipe", choices=sorted(RECIPES), help="start from a committed model's settings")
    tr.add_argument("--arch", choices=list_models())
    tr.add_argument("--name", help="model name in the repository (default: the recipe name)")
    tr.add_argument("--version", type=int, help="version folder to write (default: the recipe's, else 1)")
    tr.add_argument("--channels", type=int, choices=(1, 3))
    tr.add_argument("--input-size", type=int)
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--box-weight", type=float, help="weight of the box loss against cross-entropy")
    tr.add_argument("--copies-per-epoch", type=int, help="renderings of each training digit per epoch")
    tr.add_argument("--option", action="append", default=[], metavar="KEY=JSON", help="architecture option")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--data-dir", type=Path, help="a folder with images and labels.csv/json (default: digits)")
    tr.add_argument("--out", type=Path, help="model repository root (default: models; a dry run's: a new temporary "
                    "folder)")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace the version folder if it already holds a model.onnx (otherwise an error)")
    tr.add_argument("--threads", type=int, default=available_cores(),
                    help="torch threads (default: the cores this process may use, its CPU limit included)")
    tr.add_argument("--device", default="cpu", help="torch device to train on: cpu, or cuda on a GPU host with a "
                    "CUDA build of torch (the card records the GPU)")
    tr.add_argument("--dry-run", action="store_true", help="tiny subset, one short epoch: a smoke test")

    bench = sub.add_parser("bench-models", help="export untrained ImageNet-shaped models for benchmarks")
    bench.add_argument("--out", type=Path, default=Path("models-bench"))
    bench.add_argument("--classes", type=int, default=1000)
    bench.add_argument("--archs", nargs="+", default=[arch for arch, _ in BENCH_MODELS],
                       choices=[arch for arch, _ in BENCH_MODELS], help="which of them")

    derive = sub.add_parser("derive", help="write the INT8 and FP16 files of committed models (never committed)")
    derive.add_argument("folders", type=Path, nargs="+", help="model version folders, e.g. models/resnet18-digits/2")
    derive.add_argument("--update-cards", action="store_true",
                        help="record the files' sha256, size and test-split metrics on the cards (after a change to "
                             "how variants are derived)")

    sub.add_parser("list", help="list architectures and recipes")

    cards = sub.add_parser("cards", help="print the model repository's cards as a markdown table")
    cards.add_argument("--models", type=Path, default=Path("models"))
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe's settings (if one is named) overridden by every flag given."""
    options = dict(RECIPES[args.recipe].options) if args.recipe else {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = json.loads(value)
    given = {
        key: getattr(args, key)
        for key in ("arch", "channels", "input_size", "epochs", "batch_size", "lr", "box_weight", "copies_per_epoch",
                    "version")
        if getattr(args, key) is not None
    }
    if args.dry_run:
        given.update(epochs=1, copies_per_epoch=1)
    if args.recipe:
        config = replace(RECIPES[args.recipe], **given)
    else:
        missing = [k for k in ("arch", "channels", "input_size", "epochs") if k not in given]
        if missing or not args.name:
            needed = ", ".join("--" + k.replace("_", "-") for k in [*missing, *([] if args.name else ["name"])])
            sys.exit(f"error: give --recipe, or {needed}")
        config = TrainConfig(name=args.name, **given)
    return replace(config, name=args.name or config.name, seed=args.seed, options=options)


def print_cards(root: Path) -> None:
    print("| model | architecture | input | resize | test accuracy | test mean IoU | ONNX file | training time here |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(root.glob("*/*/card.json")):
        card = json.loads(path.read_text())
        metrics, fp32 = card["metrics"] or {}, card["files"]["fp32"]
        minutes = f"{card['training']['seconds'] / 60:.1f} min" if card["training"] else "untrained"
        print(
            f"| {card['name']}/{card['version']} | {card['architecture']} | {'x'.join(map(str, card['input']['shape'][1:]))} "
            f"| {card['input'].get('resize', 'stretch')} | {metrics.get('accuracy', '-')} | {metrics.get('mean_iou', '-')} | {fp32['bytes'] / 1e6:.1f} MB | {minutes} |"
        )


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.command == "list":
        print("architectures:", ", ".join(list_models()))
        for name, config in RECIPES.items():
            print(f"recipe {name}: {config}")
        return
    if args.command == "cards":
        print_cards(args.models)
        return
    if args.command == "derive":
        for folder in args.folders:
            rederive_variants(folder) if args.update_cards else derive_variants(folder)
        return
    if args.command == "bench-models":
        for arch, size in BENCH_MODELS:
            if arch in args.archs:
                build_untrained(arch, size, args.classes, args.out)
        return

    config = resolve_config(args)
    out = args.out or (Path(tempfile.mkdtemp(prefix="cnnserve-dry-run-")) if args.dry_run else Path("models"))
    folder = out / config.name / str(config.version)
    if (folder / MODEL_FILE).exists() and not args.overwrite:
        sys.exit(f"error: {folder} already holds a {MODEL_FILE}; give --overwrite to replace it (or another "
                 "--version or --out)")
    if args.dry_run and not args.out:
        print(f"dry run: writing under {out} (give --out to choose where)")
    torch.set_num_threads(args.threads)
    if args.data_dir:
        task = folder_task(args.data_dir, config.channels, config.input_size, config.seed)
    else:
        limit = DRY_RUN_DIGITS if args.dry_run else None
        task = digits_task(config.channels, config.input_size, config.seed, config.copies_per_epoch, limit,
                           config.train_pages)
    command = "python -m cnnserve.training " + shlex.join(argv)
    print(f"training {config.name} ({config.arch}) on {task.description}")
    build_version(config, task, out, config.version, command, device=args.device, dry_run=args.dry_run)


if __name__ == "__main__":
    main(sys.argv[1:])
