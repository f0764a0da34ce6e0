"""The installed package: `pip install .` puts one name, `cnnserve`, at the top level of site-packages,
the serving side imports nothing of the training side (the container carries no torch), and installs are pinned."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from loadtests.local_server import REPO_ROOT


def test_the_wheel_installs_only_cnnserve_at_top_level(tmp_path: Path) -> None:
    source = tmp_path / "source"  # built from a copy: setuptools writes build/ and egg-info beside the sources
    shutil.copytree(REPO_ROOT / "cnnserve", source / "cnnserve", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("cnnserve-*.whl")
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    before = {"pip", "_distutils_hack", "distutils-precedence.pth", "setuptools", "pkg_resources"}
    installed = {p.name for p in site.iterdir()} - before
    installed = {name for name in installed if not name.endswith((".dist-info", ".pth")) and name != "__pycache__"}
    assert installed == {"cnnserve"}
    # Every subpackage travels, the shared contract, the committed gRPC stubs and the page's files included.
    for module in ("__init__.py", "contract/__init__.py", "contract/images.py", "contract/letterbox.py",
                   "serving/app.py", "serving/v2/inference_pb2.py", "training/__main__.py",
                   "serving/page/index.html", "serving/page/page.js", "serving/page/page.css"):
        assert (site / "cnnserve" / module).is_file(), module


def test_serving_runs_without_the_training_side() -> None:
    """Importing the service loads no module of cnnserve.training, nor torch."""
    code = ("import sys, cnnserve.serving.app; "
            "bad = sorted(m for m in sys.modules if m.startswith('cnnserve.training') or m == 'torch'); "
            "print(','.join(bad))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPO_ROOT).stdout.strip()
    assert loaded == ""


def test_setup_installs_under_constraints_that_every_requirement_allows() -> None:
    """Reproducible installs: make setup and make setup-test pin every package to constraints.txt, and each pin
    satisfies what pyproject.toml asks (a requirement changed without `make lock` fails here)."""
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for text in [*project["dependencies"], *(r for extra in ("cpu", "variants", "train", "test") for r in extras[extra])]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name in ("cnnserve", "torch"):  # itself; torch resolves to a different build per machine
            continue
        assert name in pins, f"{name} is not pinned in constraints.txt: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} against {text}"
    makefile = (REPO_ROOT / "Makefile").read_text()
    for extras_installed in ("'.[cpu,variants]'", "'.[cpu,train,test]'"):
        assert f"pip install --quiet -c constraints.txt -e {extras_installed}" in makefile
