"""The cores a process may use (cnnserve/machine.py), which serving's default workers and threads and
training's threads follow: real processes pinned by affinity or placed in a cgroup with a CPU quota, and the
kernel's files as it writes them."""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cnnserve.machine import cgroup_cpu_quota

DEFAULTS_IN_A_FRESH_PROCESS = (
    "from cnnserve.machine import available_cores; from cnnserve.serving.config import Settings; "
    "from cnnserve.training.__main__ import parse_args; from cnnserve.training.card import machine; s = Settings(); "
    "print(available_cores(), s.inference_workers(), s.session_threads(), parse_args(['train']).threads, "
    "machine()['cores'])"
)


def defaults_in_a_process(enter) -> list[int]:
    """Cores, serving's default workers and threads, training's threads and the cores its card records, as a new
    Python process sees them once ``enter()`` has run in it."""
    result = subprocess.run([sys.executable, "-c", DEFAULTS_IN_A_FRESH_PROCESS], preexec_fn=enter,
                            capture_output=True, text=True, timeout=60, check=True)
    return [int(v) for v in result.stdout.split()]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a second core to take away")
def test_the_cores_and_the_default_workers_follow_the_cpu_affinity():
    assert defaults_in_a_process(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) == [1, 1, 1, 1, 1]


@pytest.fixture
def cpu_cgroup():
    """A new cgroup v1 ``cpu`` folder, as a container runtime or systemd makes one; skipped where that is not
    allowed (not root, or cgroup v2 only)."""
    folder = Path("/sys/fs/cgroup/cpu", f"cnnserve-test-{uuid.uuid4().hex[:8]}")
    try:
        folder.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cpu cgroup here: {exc}")
    yield folder
    folder.rmdir()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a second core to take away")
def test_the_cores_and_the_default_workers_follow_a_cgroup_cpu_limit_rounded_down(cpu_cgroup):
    (cpu_cgroup / "cpu.cfs_period_us").write_text("100000")
    (cpu_cgroup / "cpu.cfs_quota_us").write_text("150000")  # 1.5 CPUs: a second worker would be throttled
    join = lambda: (cpu_cgroup / "cgroup.procs").write_text(str(os.getpid()))  # noqa: E731
    assert defaults_in_a_process(join) == [1, 1, 1, 1, 1]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a second core to take away")
def test_a_limit_inside_a_container_whose_own_cgroup_is_mounted_as_the_root_is_read(cpu_cgroup):
    """Docker on cgroup v1 without a cgroup namespace: the container's cgroup (here without a limit) is
    bind-mounted as the root of /sys/fs/cgroup/cpu, in a mount namespace of its own, while /proc/self/cgroup still
    names the process's cgroup by its full path; the process runs in a cgroup below it limited to 1.2 CPUs."""
    job = cpu_cgroup / "job"
    job.mkdir()
    try:
        (job / "cpu.cfs_period_us").write_text("100000")
        (job / "cpu.cfs_quota_us").write_text("120000")
        script = (f"mount --make-rprivate / && mount --bind {cpu_cgroup} /sys/fs/cgroup/cpu && echo mounted && "
                  'echo $$ > /sys/fs/cgroup/cpu/job/cgroup.procs && exec "$PYTHON" -c "$CODE"')
        result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHON": sys.executable, "CODE": DEFAULTS_IN_A_FRESH_PROCESS})
    finally:
        job.rmdir()
    if not result.stdout.startswith("mounted"):
        pytest.skip(f"cannot make a mount namespace here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert [int(v) for v in result.stdout.split()[1:]] == [1, 1, 1, 1, 1]


def cgroup_files(tmp_path: Path, proc_cgroup: str, mounts: dict[str, tuple[str, str]], files: dict[str, str]):
    """``/proc/self/cgroup``, ``/proc/self/mountinfo`` and the cgroup files, as the kernel writes them, under
    ``tmp_path``: ``mounts`` maps a mount folder to (its root within the hierarchy, its type and options)."""
    lines = []
    for number, (folder, (root, kind)) in enumerate(mounts.items(), start=30):
        fstype, options = kind.split(" ")
        lines.append(f"{number} 25 0:{number} {root} {tmp_path / folder} rw,relatime shared:9 - {fstype} cgroup {options}")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "cgroup").write_text(proc_cgroup)
    (tmp_path / "mountinfo").write_text("\n".join(["22 1 8:1 / / rw - ext4 /dev/sda1 rw", *lines]) + "\n")
    return str(tmp_path / "cgroup"), str(tmp_path / "mountinfo")


V2 = {"unified": ("/", "cgroup2 rw,nsdelegate")}
V1 = {"cpu": ("/", "cgroup rw,cpu,cpuacct")}


@pytest.mark.parametrize("proc_cgroup, mounts, files, expected", [
    # cgroup v2: the tightest quota on the way up to the mount's root counts
    ("0::/kubepods/pod1/c1\n", V2, {"unified/kubepods/cpu.max": "max 100000",
                                    "unified/kubepods/pod1/cpu.max": "400000 100000",
                                    "unified/kubepods/pod1/c1/cpu.max": "max 100000"}, 4.0),
    # cgroup v2 in a container with its own cgroup namespace: its cgroup is the root
    ("0::/\n", V2, {"unified/cpu.max": "250000 100000"}, 2.5),
    ("0::/\n", V2, {"unified/cpu.max": "max 100000"}, None),
    # another namespace's cgroup, outside this one's root: only the root is read
    ("0::/../../elsewhere\n", V2, {"unified/cpu.max": "300000 100000"}, 3.0),
    # cgroup v1, a container without a cgroup namespace: its cgroup /docker/abc is the mount's root
    ("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc/job\n", {"cpu": ("/docker/abc", "cgroup rw,cpu,cpuacct")},
     {"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000",
      "cpu/job/cpu.cfs_quota_us": "150000", "cpu/job/cpu.cfs_period_us": "100000"}, 1.5),
    ("3:cpu,cpuacct:/\n", V1, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    # what the kernel never writes is no quota, not a crash
    ("0::/\n", V2, {"unified/cpu.max": "100000 0"}, None),
    ("0::/x\n", V2, {"unified/x/cpu.max": "lots 100000"}, None),
    ("", {}, {}, None),
])
def test_the_cgroup_quota_is_read_as_the_kernel_writes_it(tmp_path, proc_cgroup, mounts, files, expected):
    assert cgroup_cpu_quota(*cgroup_files(tmp_path, proc_cgroup, mounts, files)) == expected


def test_a_cgroup_path_that_is_not_text_is_no_quota(tmp_path):
    proc, mountinfo = cgroup_files(tmp_path, "", V2, {"unified/cpu.max": "200000 100000"})
    Path(proc).write_bytes(b"0::/caf\xe9\n")  # cgroup names are bytes
    assert cgroup_cpu_quota(proc, mountinfo) == 2.0  # the root's quota still counts
