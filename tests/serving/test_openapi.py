"""The OpenAPI document describes every route, and schemathesis, fuzzing the
running server from it, finds no 5xx and no hang; the server is alive after."""

import subprocess
import sys
from pathlib import Path

from tests.serving.helpers import GOOD

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_the_document_lists_every_route(server):
    document = server.client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path in ("/predict", "/predict_batch", "/models", "/v2", "/v2/models/{name}/infer",
                 "/v2/models/{name}/versions/{version}/config"):
        assert path in document["paths"]


def test_fuzzing_every_route_finds_no_server_error(server):
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--workers", "1", "--request-timeout", "30", "--generation-deterministic"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert server.client.post("/predict", files={"image": ("a.png", GOOD)}).status_code == 200
