"""What this machine gives the process: the cores it may use.

Shared by training (torch's threads) and serving (the default workers and threads), which import nothing of
each other.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


def available_cores() -> int:
    """The cores this process may use, which serving's default workers and threads and training's threads are
    sized to: the CPU affinity mask (taskset, a cpuset) and the CPU quota of the process's cgroup and its
    parents (a container's ``limits.cpu``, systemd's ``CPUQuota=``), rounded down. ``os.cpu_count()`` sees
    neither: under a limit of 2 CPUs on a 64-core node it says 64, and 64 workers would take turns on 2 cores.
    Down, not up: a cgroup that spends its quota is stopped until the period ends (100 ms by default), every
    thread at once. joblib's ``cpu_count`` reads the quota only at the cgroup root, as a container sees it, not
    a systemd service's."""
    affinity, quota = _limits()
    return max(1, min(affinity, int(quota))) if quota is not None else affinity


def describe_cores() -> str:
    """Where ``available_cores`` comes from, for the log line that explains a server's size."""
    affinity, quota = _limits()
    return (f"{available_cores()} cores (of {os.cpu_count()} on the machine; CPU affinity {affinity}, "
            f"cgroup CPU quota {'none' if quota is None else f'{quota:g} CPUs'})")


@functools.cache
def _limits() -> tuple[int, float | None]:
    """The affinity's cores and the cgroup quota, read once: a process is sized when it starts."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return affinity, cgroup_cpu_quota()


def cgroup_cpu_quota(proc_cgroup: str = "/proc/self/cgroup", mountinfo: str = "/proc/self/mountinfo") -> float | None:
    """CPUs' worth of the tightest CPU quota on this process's cgroup and those above it that this process can
    see, or None without one: cgroup v2's ``cpu.max``, v1's ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``.
    Each hierarchy is found where ``mountinfo`` says it is mounted, and the cgroup's path is taken relative to
    the mount's own root, as the JDK does: a container without a cgroup namespace mounts its own cgroup
    (``/docker/abc``) as the root of ``/sys/fs/cgroup/cpu``."""
    try:
        lines = Path(proc_cgroup).read_text(errors="surrogateescape").splitlines()
        mounts = cgroup_mounts(Path(mountinfo).read_text(errors="surrogateescape"))
    except OSError:
        return None
    quotas = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        version = 2 if controllers == "" else 1 if "cpu" in controllers.split(",") else None
        for root, point in mounts.get(version, []):
            if path != root and not path.startswith(root.rstrip("/") + "/"):
                continue  # another part of the hierarchy is mounted there
            for folder in _ancestors(path[len(root):]):
                quotas.append(_cpu_max(Path(point, folder)) if version == 2 else _cfs_quota(Path(point, folder)))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def cgroup_mounts(mountinfo: str) -> dict[int, list[tuple[str, str]]]:
    """Where the cgroup v2 hierarchy (2) and the v1 hierarchy with the ``cpu`` controller (1) are mounted: the
    (root within the hierarchy, mount point) of each, from ``/proc/self/mountinfo`` (proc(5))."""
    mounts: dict[int, list[tuple[str, str]]] = {}
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields, described = before.split(), after.split()
        if not separator or len(fields) < 5 or len(described) < 3:
            continue
        fstype, options = described[0], described[2].split(",")
        version = 2 if fstype == "cgroup2" else 1 if fstype == "cgroup" and "cpu" in options else None
        if version is not None:
            root, point = (_unescape(field) for field in fields[3:5])
            mounts.setdefault(version, []).append((root, point))
    return mounts


def _unescape(field: str) -> str:
    """A mountinfo path, whose spaces, tabs, newlines and backslashes are written as octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def _ancestors(path: str) -> list[str]:
    """A cgroup path below its mount's root and every folder above it, up to that root (""). A path that
    climbs out of the root (a cgroup namespace shows another's cgroup as ``/../x``) has only the root."""
    parts = [part for part in path.split("/") if part]
    if ".." in parts:
        return [""]
    return ["/".join(parts[:n]) for n in range(len(parts), -1, -1)]


def _cpu_max(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
        return None if quota == "max" or int(period) <= 0 else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cfs_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
