"""Box arithmetic for (x1, y1, x2, y2) boxes: IoU for metrics, GIoU for the loss."""

from __future__ import annotations

import numpy as np
import torch


def ordered(boxes: torch.Tensor) -> torch.Tensor:
    """Swap corners where a regressor put x2 left of x1 (or y2 above y1)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - GIoU (Rezatofighi et al. 2019) over the batch."""
    pred = ordered(pred)
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[:, 2:] - pred[:, :2]).prod(-1)
    area_t = (target[:, 2:] - target[:, :2]).prod(-1)
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=1e-7)
    hull = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).prod(-1)
    giou = iou - (hull - union) / hull.clamp(min=1e-7)
    return (1.0 - giou).mean()


def iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-row IoU of [N, 4] box arrays (corners ordered first)."""
    pred = np.concatenate([np.minimum(pred[:, :2], pred[:, 2:]), np.maximum(pred[:, :2], pred[:, 2:])], 1)
    lt = np.maximum(pred[:, :2], target[:, :2])
    rb = np.minimum(pred[:, 2:], target[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    union = (pred[:, 2:] - pred[:, :2]).prod(1) + (target[:, 2:] - target[:, :2]).prod(1) - inter
    return inter / np.maximum(union, 1e-12)
