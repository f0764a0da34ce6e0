"""Container and Kubernetes files are checked offline: hadolint on every
Dockerfile, and every kustomize overlay rendered and validated strictly against
a current Kubernetes schema."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnserve.serving.config import Settings, load_settings
from loadtests.local_server import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
TOOLS = Path(sys.executable).parent
DOCKERFILES = sorted(DEPLOY.glob("Dockerfile*"))
OVERLAYS = sorted(p for p in (DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    result = subprocess.run([str(TOOLS / "hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_unprivileged_with_a_readiness_healthcheck(dockerfile):
    text = dockerfile.read_text()
    assert "\nUSER 10001" in text and "EXPOSE 3000 3001" in text and "/readyz" in text


def render(overlay: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (for `kubectl kustomize`) is not on PATH"
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlays_validate_strictly(overlay, tmp_path):
    rendered = tmp_path / f"{overlay.name}.yaml"
    rendered.write_text(yaml.safe_dump_all(render(overlay)))
    extras = sorted((DEPLOY / "k8s" / "extras").glob("*.yaml"))
    result = subprocess.run([str(TOOLS / "kubernetes-validate"), "--strict", str(rendered), *map(str, extras)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_pods_are_probed_secured_and_sized(overlay):
    documents = {doc["kind"]: doc for doc in render(overlay)}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(documents)
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container
    env = {e["name"]: e["value"] for e in container["env"]}
    cpus = container["resources"]["limits"]["cpu"]
    # The server sizes workers x threads to the container's CPU limit, rounded down (cnnserve/machine.py):
    # a whole number wastes nothing, and explicit sizes must not exceed it.
    assert str(cpus).isdigit() and int(cpus) >= 1, f"a whole number of CPUs, not {cpus!r}"
    settings = Settings(workers=int(env.get("CNNSERVE_WORKERS", 0)), threads=int(env.get("CNNSERVE_THREADS", 0)))
    gpus = int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
    workers, threads = settings.inference_workers(int(cpus), gpus), settings.session_threads(int(cpus), gpus)
    assert workers * threads <= int(cpus), f"{workers} workers x {threads} threads oversubscribe {cpus} CPUs"
    ports = {p["name"] for p in documents["Service"]["spec"]["ports"]}
    assert ports == {"http", "grpc"}
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"  # unready, not restarted, when no model serves

    if overlay.name == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        cache = volumes[mounts[env["CNNSERVE_TENSORRT_CACHE_DIR"]]]  # TensorRT's engines outlive the pod
        assert cache["persistentVolumeClaim"]["claimName"] == documents["PersistentVolumeClaim"]["metadata"]["name"]


def service_links(service: dict) -> dict[str, str]:
    """The variables Kubernetes puts in every pod of the namespace for ``service`` (enableServiceLinks)."""
    name, host = service["metadata"]["name"].upper().replace("-", "_"), "10.0.0.7"
    ports = service["spec"]["ports"]
    links = {f"{name}_SERVICE_HOST": host, f"{name}_SERVICE_PORT": str(ports[0]["port"]),
             f"{name}_PORT": f"tcp://{host}:{ports[0]['port']}"}
    for port in ports:
        number, prefix = port["port"], f"{name}_PORT_{port['port']}_TCP"
        links |= {f"{name}_SERVICE_PORT_{port['name'].upper()}": str(number), prefix: f"tcp://{host}:{number}",
                  f"{prefix}_PROTO": "tcp", f"{prefix}_PORT": str(number), f"{prefix}_ADDR": host}
    return links


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_server_takes_the_environment_its_pod_gets(overlay):
    """The pod's own variables and those Kubernetes adds for the cnnserve Service (CNNSERVE_SERVICE_HOST, ...):
    the server refuses a CNNSERVE_* variable that is no setting, and so once refused to start in every pod."""
    documents = {doc["kind"]: doc for doc in render(overlay)}
    container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    environment = {e["name"]: e["value"] for e in container["env"]} | service_links(documents["Service"])
    assert "CNNSERVE_SERVICE_HOST" in environment
    load_settings(environ={**environment, "CNNSERVE_CONFIG": "/dev/null"})