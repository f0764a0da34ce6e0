"""The derived precision variants of a model version: INT8 (static QDQ quantization) and FP16 files.

Never committed: training writes them, and ``python -m cnnserve.training.variants``
rebuilds them byte for byte from the committed ``model.onnx`` (same ONNX Runtime,
calibration on the same seeded training renderings). Needs onnx, onnxruntime
and scikit-learn's digits, not torch, so ``make serve`` can derive them on a
first start.

    python -m cnnserve.training.variants models/resnet18-digits/2     # write both files
    python -m cnnserve.training.variants --missing models/*/*         # only where a file is absent
    python -m cnnserve.training.variants --only fp16 --missing models/*/*   # the CUDA image: FP16 alone

FP16 comes out byte for byte under onnxruntime-gpu too (1.31.1 on an H100, loadtests/results/2026-11-27-gpu);
INT8 does not (its calibration differs between ONNX Runtime releases), and a GPU serves FP16 anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from cnnserve.contract.card import BOXES, CARD_FILE, INPUT_NAME, MODEL_FILE, VARIANT_FILES, file_sha256

from .data import TaskData, digits_task

# INT8 test-split accuracy (813 images, 2026-11-26, fully connected layers still quantized), calibrated on 256
# and on 1,024 training images: vgg11-digits/3 0.9065 and 0.9139 (FP32 0.9139), resnet18-digits/2 0.9200 and
# 0.9213 (0.9200), lenet5-digits/3 0.7540 and 0.7589 (0.7614). Percentile calibration (99.999) also kept VGG-11's
# but cost ResNet-18 0.12 points.
CALIBRATION_IMAGES = 1024
DERIVED = ("int8", "fp16")


def kept_float(graph: onnx.GraphProto) -> list[str]:
    """The nodes INT8 leaves in float: the output activations (so probabilities still sum to one), the first
    convolution, the fully connected layers (Gemm, MatMul) and the box head.

    The first convolution reads the raw pixels, and the box head regresses coordinates that need finer steps
    than 8 bits of its activations give. Measured on resnet18-digits/2 (813 test-split images): everything
    quantized lost 1.6 points of accuracy and 0.020 of mean IoU (a robustness condition lost 1.4 points);
    the first convolution in float kept FP32's accuracy (0.9200), the box head in float its IoU (0.8503 against
    0.8508), at batch 1 and 64 1.9 to 2.3 times faster than FP32 (quantizing everything: 2.2 to 2.7).
    The fully connected layers in float kept vgg11-digits/3 at FP32's figures on every robustness condition (with
    them quantized, 2 of 271 pictures flipped on one: 0.74 points, past precision auto's tolerance) at no cost in
    speed measured (VGG-11 1,029 against 1,000 images/s at batch 32; ResNet-18 642 against 640).
    """
    producers = {out: node for node in graph.node for out in node.output}
    from_input, readers = {graph.input[0].name}, {}
    for node in graph.node:  # topological order: which tensors depend on the images, and who reads them
        if any(i in from_input for i in node.input):
            from_input.update(node.output)
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    keep = [n.name for n in graph.node if n.op_type in ("Softmax", "Sigmoid")]
    keep += [n.name for n in graph.node if n.op_type == "Conv"][:1]
    keep += [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    tensor = BOXES  # walk back from the boxes to the features the two heads share
    while tensor in producers:
        node = producers[tensor]
        keep.append(node.name)
        (tensor, *more) = [i for i in node.input if i in from_input] or [None]
        if more or readers.get(tensor, 0) > 1:
            break
    return list(dict.fromkeys(keep))


def quantize_int8(source: Path, target: Path, calibration: np.ndarray) -> None:
    """Static QDQ INT8 (per-channel weights), calibrated on ``calibration`` images; ``kept_float`` stays float."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 32)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    prepared = target.with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            nodes_to_exclude=kept_float(onnx.load(str(prepared)).graph),
        )
    finally:
        prepared.unlink(missing_ok=True)
    onnx.checker.check_model(str(target))


def convert_fp16(source: Path, target: Path) -> None:
    """Float16 weights and compute with float32 inputs/outputs kept (for GPUs)."""
    import onnx_ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = onnx_ir.from_proto(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True))
    converted.graph.sort()  # the converter appends its input casts after their consumers
    onnx.save(onnx_ir.to_proto(converted), str(target))
    onnx.checker.check_model(str(target))


def export_variants(folder: Path, task: TaskData | None, variants=DERIVED) -> dict[str, Path]:
    """``variants``' files beside ``model.onnx``; INT8 calibrated on the first images of ``task``'s training epoch
    0 (training's own task, or ``derive_variants``'s rendering of just those images; FP16 alone needs none)."""
    files = {"fp32": folder / MODEL_FILE}
    if "int8" in variants:
        files["int8"] = folder / VARIANT_FILES["int8"]
        quantize_int8(files["fp32"], files["int8"], task.train_epoch(0)[0][:CALIBRATION_IMAGES])
    if "fp16" in variants:
        files["fp16"] = folder / VARIANT_FILES["fp16"]
        convert_fp16(files["fp32"], files["fp16"])
    return files


def derive_variants(folder: Path, log=print, variants=DERIVED) -> dict[str, Path]:
    """Write a digits model's ``variants`` files from its model.onnx, INT8 calibrated as training did, and say
    whether each matches its card (byte for byte with the same ONNX Runtime)."""
    card = json.loads((folder / CARD_FILE).read_text())
    task = None
    if "int8" in variants:
        # Calibration takes the first images of training's epoch 0: the first rendering of the first training
        # digits on the recipe's own training pages, so rendering only those digits on those pages gives the same.
        channels, size, training = card["input"]["channels"], card["input"]["shape"][-1], card["training"]
        task = digits_task(channels, size, seed=training["seed"], copies_per_epoch=1, limit=CALIBRATION_IMAGES,
                           train_pages=training["settings"].get("train_pages"))
    files = export_variants(folder, task, variants)
    for variant, path in files.items():
        recorded = card["files"].get(variant, {}).get("sha256")
        same = "matches its card" if recorded == file_sha256(path) else "DIFFERS from its card (another ONNX Runtime, or derived another way)"
        log(f"{path}: {same}")
    return files


def missing_variants(folder: Path, variants=DERIVED) -> list[str]:
    """Those of ``variants`` that the card lists and the folder lacks."""
    files = json.loads((folder / CARD_FILE).read_text()).get("files", {})
    return [v for v, entry in files.items()
            if v in variants and entry.get("derived") and not (folder / entry["file"]).exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="model version folders, e.g. models/resnet18-digits/2")
    parser.add_argument("--missing", action="store_true", help="only folders where a derived file is absent")
    parser.add_argument("--only", nargs="+", choices=DERIVED, default=list(DERIVED), help="derive these alone")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not (folder / CARD_FILE).exists() or (args.missing and not missing_variants(folder, args.only)):
            continue
        print(f"deriving the {' and '.join(v.upper() for v in args.only)} file{'s' if len(args.only) > 1 else ''} of {folder} "
              "(once; precision: auto times them at start)...", flush=True)
        began = time.perf_counter()
        derive_variants(folder, variants=args.only)
        print(f"  done in {time.perf_counter() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
