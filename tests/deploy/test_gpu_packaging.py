"""The GPU packaging agrees with itself: the onnxruntime-gpu release that pyproject.toml's `gpu` extra pins is the
one deploy/Dockerfile.cuda installs, and it is built for the CUDA major of the Dockerfile's base image, as the
wheel's own metadata on the package registry says (its NVIDIA runtime requirements: `...-cu12` for CUDA 12,
`nvidia-cuda-runtime~=13.0` for CUDA 13). No GPU needed."""

import json
import re
import subprocess
import sys
import tomllib

from loadtests.local_server import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile.cuda"


def dockerfile_arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    return value


def pinned_gpu_release() -> str:
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    (release,) = [re.fullmatch(r"onnxruntime-gpu(?:\[[^\]]*\])?==(\S+)", r).group(1) for r in extra]
    return release


def wheel_cuda_major(release: str) -> int:
    """The CUDA major an onnxruntime-gpu release is built for, from its metadata on the registry."""
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--quiet",
         "--report", "-", f"onnxruntime-gpu[cuda]=={release}"],
        capture_output=True, text=True, timeout=300,
    )
    assert report.returncode == 0, f"the registry does not answer for onnxruntime-gpu {release}: {report.stderr}"
    (wheel,) = json.loads(report.stdout)["install"]
    runtimes = [r for r in wheel["metadata"]["requires_dist"] if r.startswith("nvidia-cuda-runtime")]
    (major,) = {int(m) for r in runtimes for m in re.findall(r"-cu(\d+)|~=(\d+)", r)[0] if m}
    return major


def test_the_dockerfile_installs_the_release_the_gpu_extra_pins():
    assert dockerfile_arg("ONNXRUNTIME_GPU") == pinned_gpu_release()


def test_the_pinned_release_is_built_for_the_base_images_cuda_major():
    base = dockerfile_arg("BASE_IMAGE")
    image_major = int(re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-\S+", base).group(1))
    assert wheel_cuda_major(pinned_gpu_release()) == image_major, f"onnxruntime-gpu {pinned_gpu_release()} vs {base}"


def test_a_cuda_13_release_is_told_apart_from_a_cuda_12_one():
    """The check can fail: the current releases are CUDA 13 builds."""
    assert wheel_cuda_major("1.26.0") == 12
    assert wheel_cuda_major("1.28.0") == 13
