"""The model under test, as the server describes it in ``GET /models``.

The scenarios read the input shape and labels from the server rather than
assuming them, so one locustfile drives lenet5-digits (1x32x32) and the
3x64x64 models alike, and a mismatch is reported before any load is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

DIGITS = [str(d) for d in range(10)]


class SetupError(Exception):
    """The run cannot start: the server or the model is not what the scenarios need."""


@dataclass(frozen=True)
class ModelTarget:
    name: str
    version: int
    channels: int
    height: int
    width: int
    labels: tuple[str, ...]
    has_boxes: bool
    later_versions: bool = False  # a rollout is running: answers from a newer version are right too

    def class_index(self, digit: int) -> int:
        """Where the model puts a digit among its labels."""
        return self.labels.index(str(digit))


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def discover(host: str, model: str, api_key: str | None = None, timeout: float = 30) -> ModelTarget:
    """Find ``model``'s default version in the server's listing; raise SetupError when it cannot serve digits."""
    try:
        response = requests.get(f"{host.rstrip('/')}/models", headers=auth_headers(api_key), timeout=timeout)
    except requests.RequestException as exc:
        raise SetupError(f"cannot reach {host}/models: {exc}") from None
    if response.status_code != 200:
        raise SetupError(f"GET {host}/models answered {response.status_code}: {response.text[:200]}")
    try:
        return target_from_listing(response.json(), model, host)
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise SetupError(f"{host}/models is not a cnnserve model listing ({type(exc).__name__}: {exc})") from None


def target_from_listing(listing: dict, model: str, host: str) -> ModelTarget:
    models = {m["name"]: m for m in listing["models"]}
    if model not in models:
        raise SetupError(f"{host} does not serve {model!r}; it serves {', '.join(models) or 'nothing'}")
    entry = models[model]
    version = next(v for v in entry["versions"] if v["version"] == entry["default_version"])
    if version["status"] != "ready":
        raise SetupError(f"{model} version {version['version']} is {version['status']}: {version.get('reason')}")
    _, channels, height, width = version["input"]["shape"]
    labels = tuple(version["labels"])
    if not set(DIGITS) <= set(labels):
        raise SetupError(f"{model}'s labels {list(labels)[:12]} are not the digits 0-9 these scenarios send")
    return ModelTarget(
        name=model,
        version=int(version["version"]),
        channels=int(channels),
        height=int(height),
        width=int(width),
        labels=labels,
        has_boxes="boxes" in version["outputs"],
    )
