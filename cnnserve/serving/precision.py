"""Which precision a model version serves on the CPU: the fastest variant that is as accurate as FP32.

Neither variant is right for every model. Measured with ONNX Runtime on a
2-core machine (issue 24): INT8 ran ResNet-18 2-3 times faster than FP32 and
VGG-11 2.2 times faster, LeNet-5 3 times slower. So with ``precision: auto`` on
the CPU each version's variants are timed at warm-up on the threads the
server will use, at batch 1 and at the batcher's largest batch, and the
fastest (lowest geometric mean of the two times) is served, among those whose
card metrics are within tolerance of FP32's on the test split and on every
robustness condition the card records. A variant that is not accurate
enough is never timed, however fast it may be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CANDIDATES = ("fp32", "int8")  # on the CPU; FP16 computes through casts there and is for GPUs
MARGIN = 1.1  # another variant must be this much faster than FP32, so that workers timing at once agree


@dataclass(frozen=True)
class Tolerance:
    accuracy: float = 0.005  # half a point of accuracy
    mean_iou: float = 0.01


def accuracy_shortfall(card: dict, variant: str, tolerance: Tolerance) -> str | None:
    """Why ``variant``'s card metrics are not within ``tolerance`` of FP32's, or None when they are.

    The test split is compared from ``files[variant].metrics``; each robustness condition that FP32's
    ``metrics.conditions.results`` records must also be in ``files[variant].conditions.results`` (written by
    ``python -m loadtests.accuracy --precision <variant> --write-cards``) and within tolerance.
    """
    if variant == "fp32":
        return None
    entry = card.get("files", {}).get(variant, {})
    reference = {"test split": card.get("metrics", {})}
    measured = {"test split": entry.get("metrics", {})}
    for condition, row in card.get("metrics", {}).get("conditions", {}).get("results", {}).items():
        reference[condition] = row
        measured[condition] = entry.get("conditions", {}).get("results", {}).get(condition, {})
    for where, expected in reference.items():
        for metric, allowed in (("accuracy", tolerance.accuracy), ("mean_iou", tolerance.mean_iou)):
            if metric not in expected:
                continue
            got = measured[where].get(metric)
            if got is None:
                return f"the card has no {metric} of {variant} on {where}"
            if got < expected[metric] - allowed:
                return f"{metric} on {where} is {got:.4f} against {expected[metric]:.4f} for fp32 (tolerance {allowed})"
    return None


@dataclass
class PrecisionChoice:
    """What was weighed: per variant, its timings (ms) or why it was not a candidate; the choice and why."""

    variant: str
    reason: str
    timings_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict:
        return {"variant": self.variant, "reason": self.reason,
                "timings_ms": {v: {str(size): ms for size, ms in t.items()} for v, t in self.timings_ms.items()},
                "not_candidates": self.refused}


def cost(timings_ms: dict[int, float]) -> float:
    """The geometric mean of a variant's time at batch 1 and at the largest batch: each counts as much."""
    return math.sqrt(timings_ms[min(timings_ms)] * timings_ms[max(timings_ms)])


def choose(timings_ms: dict[str, dict[int, float]], refused: dict[str, str]) -> PrecisionChoice:
    """The fastest of the timed variants (FP32 always among them), FP32 unless another beats it by ``MARGIN``."""
    fastest = min(timings_ms, key=lambda v: cost(timings_ms[v]) * (1 if v == "fp32" else MARGIN))
    sizes = sorted(timings_ms[fastest])
    if len(timings_ms) == 1:
        reason = "the only candidate" + (f" ({'; '.join(f'{v}: {r}' for v, r in refused.items())})" if refused else "")
    else:
        others = [v for v in timings_ms if v != fastest]
        speedups = ", ".join(f"{cost(timings_ms[v]) / cost(timings_ms[fastest]):.2f}x faster than {v}" for v in others)
        reason = f"fastest at batch {sizes[0]} and {sizes[-1]} (geometric mean): {speedups}"
    return PrecisionChoice(fastest, reason, timings_ms, refused)
