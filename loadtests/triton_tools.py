"""Where the Triton client tools live: ``.venv-triton``, made by ``make test``.

tritonclient pins an older protobuf than BentoML, so it gets its own virtual
environment; its wheel carries a perf_analyzer binary that runs on a CPU-only
machine once libcudart (PyPI's nvidia-cuda-runtime-cu12) is on the library path.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TRITON_VENV = REPO_ROOT / ".venv-triton"
TRITON_PYTHON = TRITON_VENV / "bin" / "python"
PERF_ANALYZER = TRITON_VENV / "bin" / "perf_analyzer"


def require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make test` (or `make setup-test`) to create .venv-triton")
    return path


def perf_analyzer_env() -> dict[str, str]:
    libraries = glob.glob(str(TRITON_VENV / "lib" / "python*" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"))
    return {**os.environ, "LD_LIBRARY_PATH": ":".join([*libraries, os.environ.get("LD_LIBRARY_PATH", "")])}
