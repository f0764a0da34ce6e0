"""Shared fixtures: the committed model repository, and copies of it to break."""

import shutil
from pathlib import Path

import pytest

from tests.committed import VERSIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"


@pytest.fixture
def repo_copy(tmp_path):
    """Copy committed models into a fresh repository: ``repo_copy("lenet5-digits", as_name=...)``."""
    root = tmp_path / "models"
    root.mkdir()

    def copy(name: str, version: int | None = None, as_name: str | None = None, as_version: int | None = None) -> Path:
        version = version or VERSIONS[name]
        target = root / (as_name or name) / str(as_version or version)
        shutil.copytree(MODELS_DIR / name / str(version), target)
        return target

    copy.root = root
    return copy


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real service on the committed models, shared by the protocol tests."""
    from loadtests.local_server import MAX_BODY_BYTES, running_server

    with running_server(tmp_path_factory.mktemp("server"), max_body_bytes=MAX_BODY_BYTES) as running:
        yield running
