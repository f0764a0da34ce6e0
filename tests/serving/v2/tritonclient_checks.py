"""Checks run with NVIDIA's tritonclient, in its own virtual environment
(``.venv-triton``: tritonclient pins a protobuf older than BentoML's).

    .venv-triton/bin/python tests/serving/v2/tritonclient_checks.py HTTP_URL GRPC_ADDRESS IMAGE.png

Prints one line per check and exits non-zero if any failed; test_tritonclient.py
runs it against the real service.
"""

import sys
import traceback

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "lenet5-digits"


def checks(module, client, png: bytes):
    def fp32_json_and_binary():
        x = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
        results = []
        for binary in (False, True) if module is httpclient else (True,):
            tensor = module.InferInput("images", list(x.shape), "FP32")
            if module is httpclient:
                tensor.set_data_from_numpy(x, binary_data=binary)
                outputs = [module.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "boxes")]
            else:
                tensor.set_data_from_numpy(x)
                outputs = [module.InferRequestedOutput(n) for n in ("probabilities", "boxes")]
            result = client.infer(MODEL, [tensor], outputs=outputs)
            results.append(result.as_numpy("probabilities"))
            assert result.as_numpy("boxes").shape == (3, 4)
        assert results[0].shape == (3, 10) and np.allclose(results[0].sum(1), 1, atol=1e-4)
        assert all(np.allclose(r, results[0], atol=1e-6) for r in results)

    def image_bytes():
        tensor = module.InferInput("image_bytes", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([png, png], dtype=np.object_))
        result = client.infer(MODEL, [tensor])
        assert result.as_numpy("probabilities").shape == (2, 10)

    def selected_output():
        x = np.zeros((1, 1, 32, 32), np.float32)
        tensor = module.InferInput("images", [1, 1, 32, 32], "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(MODEL, [tensor], outputs=[module.InferRequestedOutput("boxes")])
        assert result.as_numpy("boxes").shape == (1, 4) and result.as_numpy("probabilities") is None

    def metadata_and_readiness():
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        metadata = client.get_model_metadata(MODEL, as_json=True) if module is grpcclient else client.get_model_metadata(MODEL)
        assert metadata["inputs"][0]["name"] == "images"
        config = client.get_model_config(MODEL, as_json=True) if module is grpcclient else client.get_model_config(MODEL)
        config = config.get("config", config)
        assert int(config["max_batch_size"]) > 0

    def expect_error(name, datatype, shape, data, phrase, model=MODEL):
        tensor = module.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(data)
        try:
            client.infer(model, [tensor])
        except InferenceServerException as exc:
            assert phrase in str(exc), f"{phrase!r} not in {exc}"
            return
        raise AssertionError(f"no error for {name} {datatype} {shape}")

    def errors():
        expect_error("images", "FP32", [1, 3, 32, 32], np.zeros((1, 3, 32, 32), np.float32), "shape")
        expect_error("images", "FP64", [1, 1, 32, 32], np.zeros((1, 1, 32, 32), np.float64), "FP32")
        expect_error("images", "FP32", [1, 1, 32, 32], np.zeros((1, 1, 32, 32), np.float32), "unknown model", "nope")
        expect_error("pixels", "FP32", [1, 1, 32, 32], np.zeros((1, 1, 32, 32), np.float32), "unknown input")

    def statistics():
        """Triton's statistics extension, after the inferences above: counts and durations, summed over workers."""
        stats = client.get_inference_statistics(MODEL, as_json=True) if module is grpcclient \
            else client.get_inference_statistics(MODEL)
        (model,) = stats["model_stats"]
        assert model["name"] == MODEL and int(model["execution_count"]) > 0
        assert int(model["inference_count"]) >= int(model["execution_count"])
        figures = model["inference_stats"]
        for stat in ("success", "compute_input", "compute_infer"):
            assert int(figures[stat]["count"]) > 0 and int(figures[stat]["ns"]) > 0, stat
        assert int(figures["queue"]["count"]) > 0  # a lone request on an idle model waits no time at all
        assert int(figures["fail"]["count"]) > 0  # the errors check's requests
        sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model["batch_stats"]}
        assert sizes and sum(sizes[s] * s for s in sizes) == int(model["inference_count"])
        everything = client.get_inference_statistics(as_json=True) if module is grpcclient \
            else client.get_inference_statistics()
        assert MODEL in {m["name"] for m in everything["model_stats"]}

    return [fp32_json_and_binary, image_bytes, selected_output, metadata_and_readiness, errors, statistics]


def main() -> int:
    http_url, grpc_address, image_path = sys.argv[1:4]
    png = open(image_path, "rb").read()
    failed = 0
    for module, client in ((httpclient, httpclient.InferenceServerClient(http_url)),
                           (grpcclient, grpcclient.InferenceServerClient(grpc_address))):
        for check in checks(module, client, png):
            name = f"{module.__name__.split('.')[-1]}:{check.__name__}"
            try:
                check()
                print(f"PASS {name}")
            except Exception:  # noqa: BLE001  (report every failing check, not just the first)
                failed += 1
                print(f"FAIL {name}\n{traceback.format_exc()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
