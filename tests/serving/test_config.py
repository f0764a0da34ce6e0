"""Settings: defaults, then the YAML file, then CNNSERVE_* variables."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cnnserve.serving.config import Batching, Settings, VersionPolicy, cgroup_cpu_quota, load_settings


def test_defaults_need_no_file(tmp_path):
    settings = load_settings(environ={}, config_file=tmp_path / "absent.yaml")
    assert settings == Settings()


def test_yaml_then_environment_override(tmp_path):
    path = tmp_path / "cnnserve.yaml"
    path.write_text(
        "models_dir: /srv/models\nmax_batch_size: 32\nserve: [a, b]\n"
        "models:\n  a: {max_batch_size: 128, max_queue_delay_ms: 3, max_queue_images: 512}\n"
    )
    settings = load_settings(environ={"CNNSERVE_MAX_BATCH_SIZE": "16", "CNNSERVE_BATCHING": "false"}, config_file=path)
    assert str(settings.models_dir) == "/srv/models"
    assert settings.serve == ("a", "b")
    assert settings.max_batch_size == 16 and settings.batching is False
    assert settings.batching_for("a") == Batching(128, 3.0, 512)
    assert settings.batching_for("b") == Batching(16, 0.0, settings.max_queue_images)


def test_unknown_keys_are_refused_by_name(tmp_path):
    path = tmp_path / "cnnserve.yaml"
    path.write_text("max_bach_size: 3\n")
    with pytest.raises(ValueError, match="max_bach_size"):
        load_settings(environ={}, config_file=path)


def test_unknown_keys_under_a_model_are_refused_by_name(tmp_path):
    path = tmp_path / "cnnserve.yaml"
    path.write_text("models:\n  lenet5-digits: {max_batch_size: 256, max_bach_size: 3}\n")
    with pytest.raises(ValueError, match="models.lenet5-digits.*max_bach_size"):
        load_settings(environ={}, config_file=path)


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
@pytest.mark.parametrize("name", ["repository_poll_seconds", "body_timeout_s"])
def test_intervals_must_be_positive(name, seconds):
    with pytest.raises(ValueError, match=f"{name} must be positive"):
        load_settings(environ={f"CNNSERVE_{name.upper()}": seconds, "CNNSERVE_CONFIG": "/dev/null"})


def test_config_variable_naming_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_settings(environ={"CNNSERVE_CONFIG": str(tmp_path / "nope.yaml")})


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        load_settings(environ={"CNNSERVE_PRECISION": "int4", "CNNSERVE_CONFIG": "/dev/null"})


def test_a_negative_grpc_connection_age_is_refused():
    with pytest.raises(ValueError, match="grpc_max_connection_age_s"):
        load_settings(environ={"CNNSERVE_GRPC_MAX_CONNECTION_AGE_S": "-1", "CNNSERVE_CONFIG": "/dev/null"})


def test_gpu_batch_shapes_take_one_of_two_names():
    assert load_settings(environ={"CNNSERVE_GPU_BATCH_SHAPES": "largest", "CNNSERVE_CONFIG": "/dev/null"}) \
        .gpu_batch_shapes == "largest"
    with pytest.raises(ValueError, match="gpu_batch_shapes must be one of powers_of_two, largest"):
        load_settings(environ={"CNNSERVE_GPU_BATCH_SHAPES": "all", "CNNSERVE_CONFIG": "/dev/null"})


@pytest.mark.parametrize("cores", [1, 2, 4, 16])
def test_default_workers_times_threads_fit_the_cores(cores):
    settings = Settings()
    assert settings.inference_workers(cores) * settings.session_threads(cores) <= cores


DEFAULTS_IN_A_FRESH_PROCESS = (
    "from cnnserve.serving.config import Settings, available_cores; s = Settings(); "
    "print(available_cores(), s.inference_workers(), s.session_threads())"
)


def defaults_in_a_process(enter) -> list[int]:
    """Cores, default workers and threads, as a new Python process sees them once ``enter()`` has run in it."""
    result = subprocess.run([sys.executable, "-c", DEFAULTS_IN_A_FRESH_PROCESS], preexec_fn=enter,
                            capture_output=True, text=True, timeout=60, check=True)
    return [int(v) for v in result.stdout.split()]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a second core to take away")
def test_default_workers_follow_the_cores_the_process_may_run_on():
    assert defaults_in_a_process(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) == [1, 1, 1]


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
def test_default_workers_follow_a_cgroup_cpu_limit_rounded_down(cpu_cgroup):
    (cpu_cgroup / "cpu.cfs_period_us").write_text("100000")
    (cpu_cgroup / "cpu.cfs_quota_us").write_text("150000")  # 1.5 CPUs: a second worker would be throttled
    join = lambda: (cpu_cgroup / "cgroup.procs").write_text(str(os.getpid()))  # noqa: E731
    assert defaults_in_a_process(join) == [1, 1, 1]


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


def test_explicit_threads_shrink_the_worker_count():
    settings = Settings(threads=2)
    assert settings.inference_workers(8) == 4 and settings.session_threads(8) == 2


def test_on_gpus_there_are_four_workers_per_gpu_within_the_cores_unless_workers_are_set():
    assert Settings().inference_workers(16, gpus=2) == 8 and Settings().session_threads(16, gpus=2) == 2
    assert Settings().inference_workers(16, gpus=1) == 4 and Settings().session_threads(16, gpus=1) == 4
    assert Settings().inference_workers(2, gpus=1) == 2  # no more workers than cores
    assert Settings().inference_workers(2, gpus=4) == 4  # but at least one per GPU
    assert Settings(workers=3).inference_workers(16, gpus=2) == 3
    assert Settings().inference_workers(16, gpus=0) == 16  # no GPU: as before


def test_a_version_policy_selects_among_the_versions_found():
    assert VersionPolicy().select([3, 1, 2]) == [1, 2, 3]
    assert VersionPolicy("latest:2").select([3, 1, 2]) == [2, 3]
    assert VersionPolicy("specific:1,3").select([3, 1, 2]) == [1, 3]
    for bad in ("latest", "latest:0", "latest:x", "specific:", "newest:1", "all:2"):
        with pytest.raises(ValueError, match="version_policy"):
            VersionPolicy(bad)


def test_version_policies_come_from_the_environment_and_per_model_from_yaml(tmp_path):
    config = tmp_path / "cnnserve.yaml"
    config.write_text("models:\n  lenet5-digits: {version_policy: 'specific:3'}\n")
    settings = load_settings({"CNNSERVE_VERSION_POLICY": "latest:1"}, config)
    assert settings.version_policy_for("resnet18-digits") == VersionPolicy("latest:1")
    assert settings.version_policy_for("lenet5-digits") == VersionPolicy("specific:3")
