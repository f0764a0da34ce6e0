"""What the figures were measured on, recorded beside them."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import onnxruntime as ort


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": "CUDAExecutionProvider" in ort.get_available_providers(),
        "providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "bentoml": metadata.version("bentoml"),
        "kernel": platform.release(),
    }
