"""The training loop: one ``train`` that fits a two-headed model, one ``evaluate``
that scores any predictor (torch or ONNX Runtime) on a split.

The loss is cross-entropy on the labels plus ``box_weight`` x (smooth L1 +
GIoU) on the boxes. The model trains behind the same normalization that the
exported graph carries, so what is trained is exactly what is served.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .architectures import create_model
from .boxes import giou_loss, iou
from .data import TaskData

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


AUX_WEIGHT = 0.3  # an auxiliary classifier's share of the loss (GoogLeNet's paper)

@dataclass
class TrainConfig:
    name: str
    arch: str
    channels: int
    input_size: int
    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    box_weight: float = 2.0
    seed: int = 0
    copies_per_epoch: int = 4
    options: dict = field(default_factory=dict)
    version: int = 1  # the model repository version it is written as
    train_pages: dict = field(default_factory=dict)  # PageSpec overrides for training renderings (digits task)


class Normalized(nn.Module):
    """Per-channel mean/std normalization in front of a two-headed network."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor):
        return self.net((images - self.mean) / self.std)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    mean = images.mean(axis=(0, 2, 3))
    std = images.std(axis=(0, 2, 3))
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def torch_predictor(model: nn.Module, batch_size: int = 256) -> Predictor:
    """Runs ``model`` on whichever device holds its weights."""
    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        device = next(model.parameters()).device
        probs, boxes = [], []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                logits, box = model(torch.from_numpy(images[start : start + batch_size]).to(device))
                probs.append(torch.softmax(logits, 1).cpu().numpy())
                boxes.append(box.cpu().numpy())
        return np.concatenate(probs), np.concatenate(boxes)

    return predict


def evaluate(predict: Predictor, split: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
    images, classes, boxes = split
    probs, pred_boxes = predict(images)
    ious = iou(pred_boxes, boxes)
    return {
        "samples": int(len(images)),
        "accuracy": round(float((probs.argmax(1) == classes).mean()), 4),
        "mean_iou": round(float(ious.mean()), 4),
        "iou_at_0.5": round(float((ious >= 0.5).mean()), 4),
    }


def train(config: TrainConfig, task: TaskData, log: Callable[[str], None] = print,
          device: str = "cpu") -> tuple[Normalized, list[dict]]:
    """Fit a model on ``device`` (``cpu``, or ``cuda`` on a GPU host); returns it on the CPU, in eval mode, and
    the per-epoch history."""
    torch.manual_seed(config.seed)
    first_epoch = task.train_epoch(0)
    mean, std = channel_stats(first_epoch[0])
    net = create_model(
        config.arch,
        num_classes=len(task.labels),
        in_channels=config.channels,
        input_size=config.input_size,
        **config.options,
    )
    model = Normalized(net, mean, std).to(device)
    steps_per_epoch = math.ceil(len(first_epoch[0]) / config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    history = []
    for epoch in range(config.epochs):
        started = time.perf_counter()
        images, classes, boxes = task.train_epoch(epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(images))
        model.train()
        total = 0.0
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        for start in bar:
            batch = order[start : start + config.batch_size]
            x = torch.from_numpy(images[batch]).to(device)
            logits, pred_boxes = model(x)
            target_boxes = torch.from_numpy(boxes[batch]).to(device)
            target_classes = torch.from_numpy(classes[batch]).to(device)
            loss = F.cross_entropy(logits, target_classes) + config.box_weight * (
                F.smooth_l1_loss(pred_boxes, target_boxes, beta=0.05) + giou_loss(pred_boxes, target_boxes)
            )
            for aux in getattr(model.net.backbone, "aux_logits", []):  # GoogLeNet's auxiliary heads, if built
                loss = loss + AUX_WEIGHT * F.cross_entropy(aux, target_classes)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        val = evaluate(torch_predictor(model), task.split("val"))
        record = {
            "epoch": epoch + 1,
            "train_loss": round(total / len(order), 4),
            "val_accuracy": val["accuracy"],
            "val_mean_iou": val["mean_iou"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        history.append(record)
        log(
            f"epoch {record['epoch']:>3}/{config.epochs}  loss {record['train_loss']:.4f}  "
            f"val acc {record['val_accuracy']:.4f}  val mIoU {record['val_mean_iou']:.4f}  ({record['seconds']} s)"
        )
    return model.cpu().eval(), history
