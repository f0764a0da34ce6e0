"""What a container image or a Bento ships of the package is enough to serve: every module of ``cnnserve.serving``
imports from the shipped files alone, and training (torch) is not among them.

The images and the Bento name their files one by one, to leave training out; a module added outside
``serving/`` and ``contract/`` (``cnnserve/machine.py``) once went unshipped, and every image failed at its first
import. The server tests cannot see that: this checkout's editable install serves whatever a bundle lacks."""

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
import yaml

from loadtests.local_server import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
IMPORT_EVERY_SERVING_MODULE = """
import importlib, pkgutil, sys
import cnnserve.serving
assert cnnserve.__file__.startswith(sys.argv[1]), cnnserve.__file__
for module in pkgutil.walk_packages(cnnserve.serving.__path__, "cnnserve.serving."):
    importlib.import_module(module.name)
"""


def final_stage_copies(dockerfile) -> list[tuple[str, str]]:
    """(source, destination) of the final stage's ``COPY`` lines from the build context (not ``--from``)."""
    lines = dockerfile.read_text().splitlines()
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    copies = []
    for line in lines[last_from:]:
        if line.startswith("COPY ") and "--from" not in line:
            *sources, destination = line.split()[1:]
            copies += [(source, destination) for source in sources]
    return copies


def shipped_by_dockerfile(dockerfile, root) -> None:
    for source, destination in final_stage_copies(dockerfile):
        if not source.startswith("cnnserve"):
            continue
        target = root / destination
        if (REPO_ROOT / source).is_dir():
            shutil.copytree(REPO_ROOT / source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO_ROOT / source, target)


def shipped_by_bentofile(root) -> None:
    bentofile = yaml.safe_load((DEPLOY / "bentofile.yaml").read_text())
    for pattern in bentofile["include"]:
        if pattern.startswith("cnnserve"):
            for path in REPO_ROOT.glob(pattern):
                if path.is_file() and "__pycache__" not in path.parts:
                    (root / path.relative_to(REPO_ROOT)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, root / path.relative_to(REPO_ROOT))


SHIPPINGS = {
    **{path.name: lambda root, path=path: shipped_by_dockerfile(path, root) for path in sorted(DEPLOY.glob("Dockerfile*"))},
    "bentofile.yaml": shipped_by_bentofile,
}


@pytest.mark.parametrize("shipping", SHIPPINGS)
def test_the_shipped_package_serves_without_the_rest_of_the_checkout(shipping, tmp_path):
    SHIPPINGS[shipping](tmp_path)
    assert (tmp_path / "cnnserve" / "serving" / "app.py").is_file()
    assert not (tmp_path / "cnnserve" / "training").exists()
    # Site-packages by PYTHONPATH under -S: its .pth files, this checkout's editable install among them, stay unread.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), sysconfig.get_paths()["purelib"]])}
    result = subprocess.run([sys.executable, "-S", "-c", IMPORT_EVERY_SERVING_MODULE, str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
