#!/usr/bin/env bash
# Build the CPU image and run it for real where there is no Docker engine and no
# registry to pull a base image from (as root, with Debian's podman/buildah/runc/debootstrap):
#   1. bootstrap a minimal Debian bookworm with Python 3.11 and import it as the base image,
#   2. build deploy/Dockerfile on it,
#   3. run it on 127.0.0.1, wait for /readyz, check /predict and the gRPC health service, stop it.
# Usage: bash deploy/podman-build.sh   (or: make container-check)
set -euo pipefail
cd "$(dirname "$0")/.."
HTTP_PORT=${HTTP_PORT:-3030}
GRPC_PORT=${GRPC_PORT:-3031}
BASE=localhost/cnnserve-base:bookworm
IMAGE=localhost/cnnserve:cpu
WORK=${WORK:-/var/tmp/cnnserve-podman}
PYTHON=${PYTHON:-.venv/bin/python}

# Lowered ulimits and runc: what podman needs to run containers in this sandbox.
mkdir -p "$WORK"
cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"
PODMAN=(podman --storage-driver vfs)

if ! "${PODMAN[@]}" image exists "$BASE"; then
    echo "== bootstrapping Debian bookworm (minbase + python3) into $WORK/rootfs"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$WORK/rootfs" > "$WORK/debootstrap.log"
    tar -C "$WORK/rootfs" -c . | "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' - "$BASE"
fi

echo "== building $IMAGE"
started=$(date +%s)
# pip inside the build trusts the host's CA bundle (this sandbox's registry access goes through a TLS proxy).
"${PODMAN[@]}" build --format docker --network host --build-arg BASE_IMAGE="$BASE" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/pip-ca.crt:ro --build-arg PIP_CERT=/etc/pip-ca.crt \
    -f deploy/Dockerfile -t "$IMAGE" .
echo "build took $(( $(date +%s) - started )) s; image size: $("${PODMAN[@]}" image inspect "$IMAGE" --format '{{.Size}}') bytes"

echo "== running it on 127.0.0.1:$HTTP_PORT (HTTP) and 127.0.0.1:$GRPC_PORT (gRPC)"
"${PODMAN[@]}" rm -f cnnserve-check >/dev/null 2>&1 || true
# No systemd here to schedule the image's HEALTHCHECK: run it once by hand below instead.
"${PODMAN[@]}" run -d --name cnnserve-check --health-interval disable \
    -p "127.0.0.1:$HTTP_PORT:3000" -p "127.0.0.1:$GRPC_PORT:3001" "$IMAGE"
trap '"${PODMAN[@]}" rm -f cnnserve-check >/dev/null' EXIT
"$PYTHON" - "$HTTP_PORT" "$GRPC_PORT" <<'PY'
import sys, time, httpx, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
http, grpc_port = sys.argv[1:3]
url = f"http://127.0.0.1:{http}"
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    time.sleep(1)
else:
    sys.exit("the container never became ready")
print(f"ready after {180 - (deadline - time.monotonic()):.0f} s")
answer = httpx.post(f"{url}/predict", files={"image": open("docs/example-digit.png", "rb")},
                    data={"model": "resnet18-digits"}, timeout=30)
print("/predict:", answer.status_code, answer.text[:300])
assert answer.status_code == 200 and answer.json()["label"] == "6"
with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
print("grpc.health.v1:", health_pb2.HealthCheckResponse.ServingStatus.Name(status))
assert status == health_pb2.HealthCheckResponse.SERVING
PY
"${PODMAN[@]}" healthcheck run cnnserve-check && echo "HEALTHCHECK (GET /readyz inside the container): healthy"
echo "== container check passed"
