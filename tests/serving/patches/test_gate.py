"""Patches of library internals go in only on the versions they were tested on.

Whether each one still takes effect is tested beside what it does: the fast lane
and its CORS (test_fastlane.py), one socket per worker (test_circus_sockets.py),
single-write responses and the lone-request signal (test_uvicorn_writes.py,
test_lone_request.py), the clock on a request's headers (test_uvicorn_headers.py),
many observations in one write (test_metrics.py).
"""

import logging
import re
from pathlib import Path

import pytest

from cnnserve.serving import patches as patching

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


@pytest.mark.parametrize("library", sorted(patching.TESTED))
def test_the_installed_library_is_the_version_its_patch_was_tested_on(library):
    assert patching.installed_version(library) == patching.TESTED[library]


@pytest.mark.parametrize("library", ["bentoml", "uvicorn", "prometheus_client"])
def test_pyproject_pins_each_patched_dependency_to_its_tested_version(library):
    requirement = library.replace("_", "-")
    pins = re.findall(rf'"{requirement}(?:\[[^\]]*\])?==([^"]+)"', PYPROJECT.read_text())
    assert pins == [patching.TESTED[library]]


def test_an_untested_version_keeps_the_patch_off_and_says_what_is_lost(monkeypatch, caplog):
    patching.allowed.cache_clear()
    monkeypatch.setattr(patching, "installed_version", lambda library: "99.0")
    try:
        with caplog.at_level(logging.WARNING, logger="cnnserve"):
            assert not patching.allowed("uvicorn")
            assert not patching.allowed("uvicorn")  # logged once
    finally:
        patching.allowed.cache_clear()
    (line,) = [r.getMessage() for r in caplog.records]
    assert "uvicorn 99.0" in line and patching.TESTED["uvicorn"] in line and "two writes" in line
