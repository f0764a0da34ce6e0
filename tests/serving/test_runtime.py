"""ONNX Runtime sessions: provider choice (GPU paths tested by their selection
logic, as this machine has no GPU), integrity checks, and running."""

import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cnnserve.serving import runtime
from cnnserve.serving.repository import discover
from cnnserve.serving.runtime import (
    CPU,
    CUDA,
    TENSORRT,
    GraphedShape,
    TENSORRT_LIBRARIES,
    ModelInvalid,
    TensorrtPlan,
    batch_shapes,
    choose_providers,
    choose_variant,
    load_model,
    preload_gpu_libraries,
    provider_options,
    session_options,
)
from tests.committed import VERSIONS
from tests.serving.helpers import on_cuda
from tests.conftest import MODELS_DIR

GPU_BUILD = [TENSORRT, CUDA, CPU]  # what onnxruntime-gpu lists, GPU or not


def test_cpu_build_chooses_cpu():
    assert choose_providers(("auto",), [CPU], gpu_devices=0, tensorrt_usable=False) == [CPU]


def test_gpu_build_without_a_gpu_falls_back_to_cpu_quietly():
    assert choose_providers(("auto",), GPU_BUILD, gpu_devices=0, tensorrt_usable=True) == [CPU]


def test_gpu_present_prefers_tensorrt_then_cuda_then_cpu():
    assert choose_providers(("auto",), GPU_BUILD, gpu_devices=1, tensorrt_usable=True) == [TENSORRT, CUDA, CPU]


def test_nvidia_libraries_are_preloaded_only_by_a_gpu_build(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime.ort, "preload_dlls", lambda: calls.append(1), raising=False)
    assert not preload_gpu_libraries([CPU]) and calls == []
    assert preload_gpu_libraries(GPU_BUILD) and calls == [1]


def test_gpu_providers_are_told_their_device(tmp_path):
    plan = TensorrtPlan(tmp_path, "lenet5-digits-fp32-0123", (1, 32, 32), 64)
    assert provider_options(CUDA, device_id=1) == {"device_id": 1, "cudnn_conv_algo_search": "HEURISTIC"}
    assert provider_options(TENSORRT, device_id=1, tensorrt=plan)["device_id"] == 1
    assert provider_options(CPU, device_id=1) == {}


def test_tensorrt_builds_one_engine_per_file_from_its_fp32_graph_cached_under_its_sha256(tmp_path):
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    sha = model.card["files"]["fp32"]["sha256"]
    options = provider_options(TENSORRT, tensorrt=TensorrtPlan.for_file(model, "fp32", sha, tmp_path, 64))
    shape = "x".join(map(str, model.input_shape))
    assert options["trt_profile_min_shapes"] == f"images:1x{shape}"
    assert options["trt_profile_opt_shapes"] == options["trt_profile_max_shapes"] == f"images:64x{shape}"
    assert options["trt_fp16_enable"] and "trt_int8_enable" not in options
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"]
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path)
    assert options["trt_engine_cache_prefix"] == f"lenet5-digits-fp32-{sha[:16]}-ort{ort.__version__}-trtnone"
    changed = TensorrtPlan.for_file(model, "fp32", "f" * 64, tmp_path, 64)
    assert changed.options()["trt_engine_cache_prefix"] != options["trt_engine_cache_prefix"]  # a new file, a new engine


def test_an_upgraded_tensorrt_never_loads_an_older_engine(tmp_path, monkeypatch):
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    before = TensorrtPlan.for_file(model, "fp32", "0" * 64, tmp_path, 64).prefix
    monkeypatch.setattr(runtime, "tensorrt_version", lambda: "10.14.1")
    assert TensorrtPlan.for_file(model, "fp32", "0" * 64, tmp_path, 64).prefix == before.replace("trtnone", "trt10.14.1")


def test_tensorrt_is_refused_the_int8_files_it_cannot_build():
    with pytest.raises(ValueError, match="TensorRT cannot build the INT8 files"):
        choose_variant("int8", [TENSORRT, CUDA, CPU], ["fp32", "int8"])
    assert choose_variant("int8", [CUDA, CPU], ["fp32", "int8"]) == "int8"


def test_tensorrt_is_only_taken_in_its_current_major_with_its_parser():
    assert TENSORRT_LIBRARIES == ("libnvinfer.so.10", "libnvonnxparser.so.10")


def test_onnx_runtime_never_retries_a_failed_provider_on_its_own_with_the_options_dropped(tmp_path):
    """ONNX Runtime's Python session retries a provider that fails at creation on its own list, without the
    options (device, cuDNN search, TensorRT's profile); load_model turns that off (a private attribute, read here
    to check the switch still takes effect on this ONNX Runtime)."""
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    loaded = load_model(model, [CPU], "fp32", 1, tmp_path)
    assert loaded.session._enable_fallback is False and loaded.open_session()._enable_fallback is False


def test_gpu_batch_shapes_are_the_powers_of_two_up_to_the_limit_or_the_limit_alone():
    assert batch_shapes(64, "powers_of_two") == [1, 2, 4, 8, 16, 32, 64]
    assert batch_shapes(48, "powers_of_two") == [1, 2, 4, 8, 16, 32, 48]
    assert batch_shapes(64, "largest") == [64]


def test_with_padded_batches_each_size_runs_on_its_own_session_and_answers_only_the_real_rows(tmp_path):
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    loaded = load_model(model, [CPU], "fp32", 1, tmp_path)
    assert sorted(loaded.warm_up(12)) == [1, 2, 4, 8, 12]  # on the CPU: the cost table's sizes
    padded = on_cuda(loaded)
    padded.pad_batches([4, 12])
    assert list(padded.warm_up(12)) == [4, 12]
    assert padded.shapes[12].session is loaded.session and padded.shapes[4].session is not loaded.session
    seen = []  # (batch size, what its session was given) of every run
    for size, shape in padded.shapes.items():
        shape.fill = lambda images, fill=shape.fill, size=size: seen.append((size, fill(images).shape)) or fill(images)
    rng = np.random.default_rng(0)
    for rows in (3, 12, 5, 4, 1):
        images = rng.random((rows, *model.input_shape), dtype=np.float32)
        probabilities, boxes = padded.run(images)
        expected_probabilities, expected_boxes = loaded.run(images)
        np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(boxes, expected_boxes, rtol=1e-5, atol=1e-6)
    assert seen == [(size, (size, *model.input_shape)) for size in (4, 12, 12, 4, 4)]  # each its own shape only


def test_cuda_graphs_are_asked_of_the_cuda_provider_alone():
    assert provider_options(CUDA, 1, cuda_graph=True)["enable_cuda_graph"] == "1"
    assert "enable_cuda_graph" not in provider_options(CUDA, 1)
    assert provider_options(CPU, cuda_graph=True) == {}


def test_without_cuda_no_graphed_sessions_are_opened(tmp_path):
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    assert load_model(model, [CPU], "fp32", 1, tmp_path, cuda_graphs=True).open_graphed_session is None


def test_with_cuda_graphs_every_size_replays_from_buffers_bound_once(tmp_path):
    """The graphed path's binding, on the CPU (where ONNX Runtime captures no graph): fixed input and output
    buffers, each batch copied in, its answers copied out before the next batch overwrites the buffers."""
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    loaded = load_model(model, [CPU], "fp32", 1, tmp_path)
    graphed = on_cuda(loaded)  # its sessions report CUDA and run on the CPU, where their buffers live too
    graphed.open_graphed_session, graphed.graph_buffers_on = graphed.open_session, "cpu"
    graphed.pad_batches([4, 12])
    assert graphed.graphed and all(isinstance(shape, GraphedShape) for shape in graphed.shapes.values())
    assert all(shape.session is not loaded.session for shape in graphed.shapes.values())  # the largest's too
    addresses = {size: shape.input.data_ptr() for size, shape in graphed.shapes.items()}
    rng = np.random.default_rng(1)
    answers = []
    for rows in (3, 12, 4, 1, 9):
        images = rng.random((rows, *model.input_shape), dtype=np.float32)
        answers.append((graphed.run(images), loaded.run(images)))
    for (probabilities, boxes), (expected_probabilities, expected_boxes) in answers:  # none overwritten since
        np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(boxes, expected_boxes, rtol=1e-5, atol=1e-6)
    assert {size: shape.input.data_ptr() for size, shape in graphed.shapes.items()} == addresses


def test_a_graphed_session_that_comes_up_on_another_provider_is_not_used(tmp_path, caplog):
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    loaded = load_model(model, [CPU], "fp32", 1, tmp_path)
    graphed = replace(on_cuda(loaded), open_graphed_session=loaded.open_session, graph_buffers_on="cpu")
    graphed.pad_batches([4, 8])
    assert not graphed.graphed and list(graphed.shapes) == [4, 8]
    assert "CUDA graphs could not be made (a session came up on CPUExecutionProvider)" in caplog.text


def test_a_model_whose_cuda_graph_cannot_be_made_runs_without(tmp_path, caplog):
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    loaded = on_cuda(load_model(model, [CPU], "fp32", 1, tmp_path))

    def refused():  # what ONNX Runtime says of a graph with nodes off the GPU; there is no GPU here
        raise RuntimeError("This session cannot use the graph capture feature as requested by the user as all "
                           "compute graph nodes have not been partitioned to the CUDAExecutionProvider")

    loaded.open_graphed_session = refused
    loaded.pad_batches([4, 8])
    assert list(loaded.shapes) == [4, 8] and not loaded.graphed
    assert "CUDA graphs could not be made" in caplog.text and "partitioned" in caplog.text
    probabilities, _ = loaded.run(np.zeros((3, *model.input_shape), np.float32))
    assert probabilities.shape[0] == 3


def test_a_session_per_shape_that_comes_up_on_another_provider_is_not_used(tmp_path, caplog):
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    loaded = replace(load_model(model, [CPU], "fp32", 1, tmp_path), providers=[CUDA, CPU])  # its others: the CPU's
    loaded.pad_batches([1, 2, 4, 8])
    assert list(loaded.shapes) == [8] and "came up on CPUExecutionProvider" in caplog.text


def test_when_the_sessions_per_shape_cannot_be_made_every_batch_is_padded_to_the_largest(tmp_path, caplog):
    model = discover(MODELS_DIR, ("lenet5-digits",)).resolve("lenet5-digits")
    loaded = replace(load_model(model, [CPU], "fp32", 1, tmp_path), providers=[CUDA, CPU])

    def out_of_gpu_memory():  # what the CUDA provider raises when the card is full; there is no card here
        raise RuntimeError("CUDA failure 2: out of memory")

    loaded.open_session = out_of_gpu_memory
    loaded.pad_batches([1, 2, 4, 8])
    assert list(loaded.shapes) == [8] and loaded.shapes[8].session is loaded.session
    assert "every batch is padded to 8 instead" in caplog.text and "out of memory" in caplog.text
    probabilities, _ = loaded.run(np.zeros((3, *model.input_shape), np.float32))
    assert probabilities.shape[0] == 3


def test_a_gpu_next_to_onnx_runtimes_cpu_build_is_pointed_out(caplog):
    assert choose_providers(("auto",), [CPU], gpu_devices=2, tensorrt_usable=False) == [CPU]
    assert "2 NVIDIA GPU(s) present, but this ONNX Runtime build" in caplog.text and "pip install '.[gpu]'" in caplog.text
    caplog.clear()
    choose_providers(("auto",), [CPU], gpu_devices=0, tensorrt_usable=False)
    choose_providers(("auto",), GPU_BUILD, gpu_devices=1, tensorrt_usable=False)
    assert "NVIDIA GPU" not in caplog.text


def test_tensorrt_is_skipped_when_its_library_does_not_load():
    assert choose_providers(("auto",), GPU_BUILD, gpu_devices=2, tensorrt_usable=False) == [CUDA, CPU]


def test_explicit_provider_list_is_honoured_and_ends_in_cpu():
    assert choose_providers((CUDA,), GPU_BUILD, gpu_devices=1, tensorrt_usable=True) == [CUDA, CPU]


def test_explicit_provider_this_build_lacks_is_an_error_naming_it():
    with pytest.raises(ValueError, match="CUDAExecutionProvider"):
        choose_providers((CUDA,), [CPU], gpu_devices=0, tensorrt_usable=False)


@pytest.mark.parametrize(
    ("precision", "providers", "expected"),
    [("auto", [CPU], "fp32"), ("auto", [CUDA, CPU], "fp16"), ("auto", [TENSORRT, CUDA, CPU], "fp32"),
     ("int8", [CPU], "int8"), ("fp32", [CUDA, CPU], "fp32")],
)
def test_precision_variant_follows_the_provider(precision, providers, expected):
    """CUDA gets the FP16 file; TensorRT the FP32 one, from which it builds its own FP16 engine."""
    assert choose_variant(precision, providers, ["fp32", "fp16", "int8"]) == expected


def test_gpu_without_an_fp16_file_uses_fp32():
    assert choose_variant("auto", [CUDA, CPU], ["fp32"]) == "fp32"


def test_session_threads_are_set_deliberately():
    options = session_options(threads=1)
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


@pytest.fixture(scope="module")
def lenet_with_variants(tmp_path_factory):
    """A copy of the committed LeNet-5 with its INT8 and FP16 files derived (they are never committed)."""
    from cnnserve.training.variants import derive_variants
    from tests.conftest import MODELS_DIR

    root = tmp_path_factory.mktemp("models")
    shutil.copytree(MODELS_DIR / "lenet5-digits", root / "lenet5-digits",
                    ignore=shutil.ignore_patterns("model.int8.onnx", "model.fp16.onnx"))
    derive_variants(root / "lenet5-digits" / str(VERSIONS["lenet5-digits"]), log=lambda line: None)
    return discover(root).resolve("lenet5-digits")


def test_a_derived_precision_that_is_absent_is_refused_with_the_command_to_make_it(repo_copy):
    folder = repo_copy("lenet5-digits")
    for name in ("model.int8.onnx", "model.fp16.onnx"):
        (folder / name).unlink(missing_ok=True)
    model = discover(repo_copy.root).resolve("lenet5-digits")
    assert model.variants() == ["fp32"]
    with pytest.raises(ValueError, match="python -m cnnserve.training derive"):
        choose_variant("int8", [CPU], model.variants())


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_every_variant_loads_and_runs(variant, lenet_with_variants, tmp_path):
    model = lenet_with_variants
    loaded = load_model(model, [CPU], variant, threads=1, cache_dir=tmp_path)
    assert loaded.variant == variant
    probabilities, boxes = loaded.run(np.random.rand(3, 1, 32, 32).astype(np.float32))
    assert probabilities.shape == (3, 10) and boxes.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-3)
    warm_up = loaded.warm_up(8)
    assert sorted(warm_up) == [1, 2, 4, 8] and all(seconds > 0 for seconds in warm_up.values())


def plain_max_pools(path, options) -> list[str]:
    """The MaxPool nodes ONNX Runtime runs in its plain NCHW kernel once it has optimised ``path``."""
    optimized = path.parent / "optimized.onnx"
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=[CPU])
    return [n.name for n in onnx.load(str(optimized)).graph.node if n.op_type == "MaxPool" and n.domain == ""]


def test_an_int8_file_pools_in_the_fast_layout(lenet_with_variants, tmp_path):
    """Left to ONNX Runtime, the first max pooling of an INT8 file ran on uint8 in the plain NCHW kernel (1.2 of
    LeNet-5's 2.6 ms at batch 16); the server's session options keep it in the blocked float layout."""
    int8 = tmp_path / "model.int8.onnx"
    shutil.copy(lenet_with_variants.file_for("int8")[0], int8)
    defaults = ort.SessionOptions()
    defaults.log_severity_level = 3
    assert plain_max_pools(int8, defaults), "ONNX Runtime no longer pools on uint8: DISABLED_OPTIMIZERS may go"
    assert plain_max_pools(int8, session_options(threads=1)) == []


def edit_card(folder, change) -> None:
    card = json.loads((folder / "card.json").read_text())
    change(card)
    (folder / "card.json").write_text(json.dumps(card))


def overwrite_bytes(path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def corrupt_without_hash(folder) -> None:
    edit_card(folder, lambda card: card.pop("files"))
    (folder / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda folder: overwrite_bytes(folder / "model.onnx", 2000, b"\x00\x01\x02\x03"), "sha256"),
        (lambda folder: (folder / "model.onnx").unlink(), "missing"),
        (lambda folder: edit_card(folder, lambda card: card["input"].update(shape=[-1, 1, 28, 28])), "input shape"),
        (corrupt_without_hash, "ONNX Runtime cannot load"),
    ],
    ids=["file-does-not-match-card", "file-missing", "graph-contradicts-card", "corrupt-file-without-hash"],
)
def test_a_model_that_breaks_the_contract_is_refused_with_the_reason(repo_copy, tmp_path, damage, reason):
    damage(repo_copy("lenet5-digits"))
    model = discover(repo_copy.root).resolve("lenet5-digits")
    with pytest.raises(ModelInvalid, match=reason):
        load_model(model, [CPU], "fp32", threads=1, cache_dir=tmp_path)


@pytest.mark.parametrize("message, lost", [
    ("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access was encountered ; GPU=0 ; "
     "hostname=h ; file=cuda_call.cc ; line=129 ; expr=cudaMemcpyAsync(...)", True),
    ("CUDA failure 719: unspecified launch failure ; GPU=1", True),
    ("CUDA failure 2: out of memory ; GPU=0", False),  # the next, smaller batch may fit
    ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : indices element out of data bounds, idx=700", False),
])
def test_only_errors_that_leave_the_cuda_context_unusable_say_it_is_lost(message, lost):
    assert runtime.cuda_context_lost(RuntimeError(message)) is lost
