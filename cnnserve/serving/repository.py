"""The model repository: ``<root>/<name>/<version>/{model.onnx, card.json}``.

Discovery reads only the cards (cheap, done by every process); the integrity
checks that need the model file (sha256, input and output names and shapes)
run where the model is loaded, in ``runtime``. A model whose card cannot be
used is kept as a failure with its reason, never silently dropped, and the
others still serve.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..contract.card import BOXES, CARD_FILE, INPUT_NAME, MODEL_FILE, PROBABILITIES
from ..contract.letterbox import POLICIES, STRETCH
from .config import VersionPolicy
from .errors import WHOLE_NUMBER_DIGITS, ModelNotFound, ModelUnavailable

log = logging.getLogger("cnnserve.repository")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    folder: Path
    card: dict

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    @functools.cached_property
    def metric_labels(self) -> tuple[str, str]:
        return self.name, str(self.version)

    @functools.cached_property
    def input_shape(self) -> tuple[int, int, int]:
        _, channels, height, width = self.card["input"]["shape"]
        return channels, height, width

    @functools.cached_property
    def resize_policy(self) -> str:
        """How images are fitted to the input; cards written before letterbox existed stretch."""
        return self.card["input"].get("resize", STRETCH)

    @property
    def labels(self) -> list[str]:
        return self.card["labels"]

    @functools.cached_property
    def output_names(self) -> list[str]:
        """What the model answers, in the contract's order: probabilities, then boxes if it has them."""
        return [PROBABILITIES, BOXES] if self.has_boxes else [PROBABILITIES]

    @functools.cached_property
    def has_boxes(self) -> bool:
        return any(o["name"] == BOXES for o in self.card["outputs"])

    def file_for(self, variant: str) -> tuple[Path, str | None]:
        """The file of a variant and its recorded sha256 (None when the card has none)."""
        entry = self.card.get("files", {}).get(variant)
        if entry is None:
            return self.folder / MODEL_FILE, None
        return self.folder / entry["file"], entry.get("sha256")

    def variants(self) -> list[str]:
        """The precisions this version can serve: its contract file, and derived files that are present."""
        files = self.card.get("files", {"fp32": {}})
        return [v for v, entry in files.items() if not entry.get("derived") or (self.folder / entry["file"]).exists()]


@dataclass
class Repository:
    root: Path
    models: dict[str, dict[int, ModelVersion]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # "name" or "name/version" -> reason

    def versions(self) -> list[ModelVersion]:
        return [mv for versions in self.models.values() for mv in versions.values()]

    def resolve(self, name: str, version: int | None = None) -> ModelVersion:
        """The requested version, or the highest when ``version`` is None or 0."""
        if name not in self.models:
            reason = self.failures.get(name) or next(
                (r for k, r in self.failures.items() if k.startswith(name + "/")), None
            )
            if reason:
                raise ModelUnavailable(f"model {name!r} is not available: {reason}")
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"unknown model {name!r}; served models: {known}")
        versions = self.models[name]
        if not version:
            return versions[max(versions)]
        if version not in versions:
            reason = self.failures.get(f"{name}/{version}")
            if reason:
                raise ModelUnavailable(f"model {name!r} version {version} is not available: {reason}")
            raise ModelNotFound(
                f"model {name!r} has no version {version}; versions: {', '.join(map(str, sorted(versions)))}"
            )
        return versions[version]

    def has_folder(self, name: str) -> bool:
        """Whether ``name`` is a model folder under the root (loaded or not); never a path out of it, and never
        an error for a name the file system cannot hold (over 255 bytes raised OSError: a 500)."""
        if not name or name.startswith(".") or "/" in name or "\0" in name:
            return False
        try:
            return (self.root / name).is_dir()
        except OSError:
            return False

    def default_model(self) -> str | None:
        return next(iter(self.models), None)


# Requests name a version as errors.whole_number reads it, and version 0 means "the default".
MAX_VERSION = 10**WHOLE_NUMBER_DIGITS
VERSION_RULE = (f"a version folder is named by a whole number from 1 to {WHOLE_NUMBER_DIGITS} digits, without "
                "leading zeros, as requests name versions")


def is_version(folder_name: str) -> bool:
    """A version folder's name: ASCII digits ("²" passes ``isdigit`` but not ``int``)."""
    return folder_name.isascii() and folder_name.isdigit()


def read_card(folder: Path, name: str, version: int) -> dict:
    """Load and check a card against the contract; raises ValueError with the reason."""
    path = folder / CARD_FILE
    if not path.exists():
        raise ValueError(f"{CARD_FILE} is missing")
    try:
        card = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{CARD_FILE} cannot be read: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:  # invalid JSON or UTF-8
        raise ValueError(f"{CARD_FILE} is not valid JSON: {exc}") from None
    try:
        return checked_card(card, name, version)
    except (TypeError, AttributeError, IndexError) as exc:  # a field of the wrong type; no card may stop a server
        raise ValueError(f"{CARD_FILE} does not follow the contract ({type(exc).__name__}: {exc})") from None


def checked_card(card: dict, name: str, version: int) -> dict:
    if not isinstance(card, dict):
        raise ValueError(f"{CARD_FILE} must hold a JSON object, not {type(card).__name__}")
    spec = card.get("input") or {}
    shape = spec.get("shape")
    if spec.get("name", INPUT_NAME) != INPUT_NAME:
        raise ValueError(f"input must be named {INPUT_NAME!r}, card says {spec.get('name')!r}")
    whole = isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape[1:])
    if not (whole and len(shape) == 4 and shape[1] in (1, 3) and all(d > 0 for d in shape[1:])):
        raise ValueError(f"input shape must be [N, C(1 or 3), H, W], card says {shape}")
    if spec.get("resize", STRETCH) not in POLICIES:
        raise ValueError(f"input.resize must be one of {', '.join(POLICIES)}, card says {spec.get('resize')!r}")
    outputs = card.get("outputs") or [{"name": PROBABILITIES}]
    names = [o.get("name") for o in outputs]
    if PROBABILITIES not in names or not set(names) <= {PROBABILITIES, BOXES}:
        raise ValueError(f"outputs must be {PROBABILITIES!r} and optionally {BOXES!r}, card says {names}")
    labels = card.get("labels")
    classes = next((o.get("shape", [None, None])[1] for o in outputs if o.get("name") == PROBABILITIES), None)
    if labels is None and classes:
        labels = [str(i) for i in range(classes)]
    if not labels:
        raise ValueError("the card has no labels and no probabilities shape to count classes from")
    if not (isinstance(labels, list) and all(isinstance(label, str) for label in labels)):
        raise ValueError(f"labels must be a list of strings, card says {labels!r}"[:200])
    if classes and classes > 0 and classes != len(labels):
        raise ValueError(f"card lists {len(labels)} labels for {classes} classes")
    return {**card, "name": name, "version": version, "labels": labels, "outputs": outputs}


def discover(root: Path, serve: tuple[str, ...] = (), policy: Callable[[str], VersionPolicy] | None = None) -> Repository:
    """Find every model version under ``root`` (or only those named in ``serve``); with ``policy``, only the
    versions each model's version policy selects among those whose cards can be read."""
    repository = Repository(root)
    if not root.is_dir():
        repository.failures["*"] = f"models directory {root} does not exist"
        log.error("models directory %s does not exist", root)
        return repository
    names = serve or tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    for name in names:
        model_dir = root / name
        version_dirs = [p for p in model_dir.iterdir() if p.is_dir() and is_version(p.name)] if model_dir.is_dir() else []
        if not version_dirs:
            repository.failures[name] = f"no version folders under {model_dir}"
            log.error("model %s: no version folders under %s", name, model_dir)
            continue
        readable = {}
        for folder in sorted(version_dirs, key=lambda p: int(p.name)):
            version = int(folder.name)
            if folder.name != str(version) or not 0 < version < MAX_VERSION:  # "0", "007": no request could name it
                repository.failures[f"{name}/{folder.name}"] = VERSION_RULE
                log.error("model %s version folder %s refused: %s", name, folder.name, VERSION_RULE)
                continue
            try:
                readable[version] = ModelVersion(name, version, folder, read_card(folder, name, version))
            except ValueError as exc:
                repository.failures[f"{name}/{version}"] = str(exc)
                log.error("model %s version %d refused: %s", name, version, exc)
        for version in policy(name).select(list(readable)) if policy else readable:
            repository.models.setdefault(name, {})[version] = readable[version]
    return repository
