"""What the figures were measured on, recorded beside them."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

import onnxruntime as ort

from cnnserve.machine import available_cores


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_gpu() -> dict:
    """The first GPU as nvidia-smi reports it (name, driver, memory, compute capability); empty without one."""
    fields = "name,driver_version,memory.total,compute_cap"
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], check=True,
                              capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    return dict(zip(("gpu", "driver", "gpu_memory", "compute_capability"), (s.strip() for s in line.split(","))))


def gpu_memory_held(pids: set[int]) -> float | None:
    """MiB of GPU memory the processes ``pids`` hold together, by nvidia-smi's list of compute processes; None
    without nvidia-smi, or where it cannot say (``[N/A]``)."""
    try:
        listing = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                 check=True, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return memory_of(listing, pids)


def memory_of(listing: str, pids: set[int]) -> float | None:
    """The sum of ``used_memory`` over the lines of ``pids`` in nvidia-smi's ``pid,used_memory`` CSV."""
    total = 0.0
    for line in listing.splitlines():
        pid, _, used = (part.strip() for part in line.partition(","))
        if pid.isdigit() and int(pid) in pids:
            try:
                total += float(used)
            except ValueError:  # "[N/A]": the driver does not tell (some virtualized GPUs)
                return None
    return total


def describe_machine(provider: str = "CPUExecutionProvider") -> dict:
    """The machine, and the provider the figures were asked of (with the GPU's description when it is one)."""
    return {
        "cpu": cpu_model(),
        "provider": provider,
        **(describe_gpu() if provider != "CPUExecutionProvider" else {}),
        "cores": available_cores(),  # those this process may use: its affinity and its cgroup's CPU limit
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "bentoml": metadata.version("bentoml"),
        "kernel": platform.release(),
    }
