"""The model repository extension through NVIDIA's tritonclient (run in ``.venv-triton``, like tritonclient_checks.py):
index, unload, index again, infer (refused), load, infer (answered), over HTTP and then gRPC.

    .venv-triton/bin/python tests/serving/v2/tritonclient_repository.py HTTP_URL GRPC_ADDRESS MODEL
"""

import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def index(module, client) -> dict[str, str]:
    entries = client.get_model_repository_index(as_json=True)["models"] if module is grpcclient \
        else client.get_model_repository_index()
    return {e["name"]: e.get("state", "") for e in entries}


def infer(module, client, model: str):
    tensor = module.InferInput("images", [1, 1, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 32, 32), np.float32))
    return client.infer(model, [tensor]).as_numpy("probabilities")


def cycle(module, client, model: str) -> None:
    assert index(module, client)[model] == "READY"
    client.unload_model(model)
    assert index(module, client)[model] == "UNAVAILABLE"
    assert not client.is_model_ready(model)
    try:
        infer(module, client, model)
        raise AssertionError("an unloaded model answered")
    except InferenceServerException as exc:
        assert model in str(exc), exc
    client.load_model(model)
    assert index(module, client)[model] == "READY" and client.is_model_ready(model)
    assert infer(module, client, model).shape == (1, 10)


def main() -> int:
    http_url, grpc_address, model = sys.argv[1:4]
    for module, client in ((httpclient, httpclient.InferenceServerClient(http_url)),
                           (grpcclient, grpcclient.InferenceServerClient(grpc_address))):
        cycle(module, client, model)
        print(f"PASS {module.__name__.split('.')[-1]}: index, unload, load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
