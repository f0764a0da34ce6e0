"""The scenarios by name: the Locust user class that runs each, and its tags.

Plain data, so the gate can turn ``--scenario predict,grpc`` into Locust's
positional user class names without importing Locust.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    user_class: str
    tags: tuple[str, ...]
    summary: str


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("predict", "PredictUser", ("predict", "rest"), "POST /predict, one image file"),
        Scenario("predict-batch", "PredictBatchUser", ("predict-batch", "rest"), "POST /predict_batch, several files"),
        Scenario("v2-json", "V2JsonUser", ("v2-json", "v2", "rest"), "V2 REST infer, JSON tensors"),
        Scenario("v2-binary", "V2BinaryUser", ("v2-binary", "v2", "rest"), "V2 REST infer, binary tensors"),
        Scenario("grpc", "GrpcUser", ("grpc", "v2"), "V2 gRPC ModelInfer, raw tensor contents"),
    )
}


def scenarios_named(names: str) -> list[Scenario]:
    """``"predict,grpc"`` (or ``"all"``) to scenarios; unknown names raise ValueError."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if wanted == ["all"]:
        return list(SCENARIOS.values())
    unknown = [n for n in wanted if n not in SCENARIOS]
    if unknown or not wanted:
        raise ValueError(f"unknown scenario(s) {unknown or names!r}; known: all, {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in dict.fromkeys(wanted)]
