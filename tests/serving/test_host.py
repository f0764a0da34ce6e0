"""A worker's models never fall back to the CPU silently: when ONNX Runtime gives a session another provider than
the one asked for, the model is loaded again for the CPU and shown as degraded, or refused when the providers were
set explicitly. The GPU is what cannot exist here, so the test makes the host believe in one; the session that
answers with the CPU provider is ONNX Runtime's own (this CPU build takes a CUDA request that way)."""

import asyncio
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from prometheus_client import REGISTRY

from cnnserve.machine import available_cores
from cnnserve.serving import host as host_module
from cnnserve.serving.config import Settings
from cnnserve.serving.errors import DeviceLost, ModelRunFailed
from cnnserve.serving.host import ModelHost
from cnnserve.serving.repository import discover
from cnnserve.serving.runtime import CPU, CUDA, TENSORRT, GraphedShape, ModelFileInvalid, ModelInvalid, PaddedShape
from tests.committed import VERSIONS
from tests.serving.helpers import on_cuda


@pytest.fixture
def a_gpu_that_does_not_work(monkeypatch):
    monkeypatch.setattr(host_module.ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(host_module, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(host_module, "tensorrt_loads", lambda: False)
    monkeypatch.setattr(host_module, "preload_gpu_libraries", lambda available: True)


@pytest.fixture
def host_for(repo_copy):
    """``host_for(**settings)``: a host on a copy of LeNet-5 (or ``model``), and the version's key; its metrics are
    unregistered when the test builds another host or ends, so that one can register them again."""
    hosts = []

    def unregister_built():
        for built in hosts:
            for metric in vars(built.metrics).values():
                REGISTRY.unregister(metric)
        hosts.clear()

    def build(worker_index: int = 0, model: str = "lenet5-digits", **settings) -> tuple[ModelHost, str]:
        unregister_built()
        if not (repo_copy.root / model).exists():  # a second host of the test shares the first one's
            repo_copy(model)
        config = replace(Settings(), **{"models_dir": repo_copy.root, "workers": 1, "threads": 1,
                                         "borrow_idle_cores": False, **settings})
        hosts.append(ModelHost(config, discover(config.models_dir, ()), worker_index))
        return hosts[-1], f"{model}/{VERSIONS[model]}"

    yield build
    unregister_built()


def test_a_session_that_falls_back_is_reloaded_for_the_cpu_and_shown_degraded(host_for, a_gpu_that_does_not_work):
    host, key = host_for()
    assert host.providers[0] == CUDA  # what was asked for
    status = host.status[key]
    assert status["status"] == "degraded" and status["provider"] == CPU
    assert "CUDAExecutionProvider was asked for but ONNX Runtime gave CPUExecutionProvider" in status["reason"]
    assert status["precision_choice"]["variant"] == status["variant"] in ("fp32", "int8")  # for the CPU, by timing
    assert host.metrics.model_degraded.labels("lenet5-digits", str(VERSIONS["lenet5-digits"]))._value.get() == 1


def test_with_providers_set_explicitly_a_fallback_is_refused(host_for, a_gpu_that_does_not_work):
    host, key = host_for(providers=(CUDA, CPU))
    assert host.status[key]["status"] == "failed"
    assert "providers are set explicitly" in host.status[key]["reason"]


@pytest.fixture
def tensorrt_that_cannot_build(a_gpu_that_does_not_work, monkeypatch):
    """TensorRT's libraries load, but its session fails at creation; CUDA's session works (and runs on the CPU)."""
    monkeypatch.setattr(host_module.ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(host_module, "tensorrt_loads", lambda: True)
    real_load = host_module.load_model

    def load(model, providers, *args, **kwargs):
        if providers[0] == TENSORRT:
            raise ModelInvalid("ONNX Runtime cannot load model.onnx on TensorrtExecutionProvider: EP_FAIL")
        return on_cuda(real_load(model, providers, *args, **kwargs))

    monkeypatch.setattr(host_module, "load_model", load)


def test_a_provider_that_fails_at_creation_steps_down_to_the_next_and_is_shown_degraded(host_for,
                                                                                         tensorrt_that_cannot_build):
    host, key = host_for()
    assert host.providers == [TENSORRT, CUDA, CPU]
    status = host.status[key]
    assert status["status"] == "degraded" and status["provider"] == CUDA
    assert status["reason"] == ("ONNX Runtime cannot load model.onnx on TensorrtExecutionProvider: EP_FAIL; "
                                "served on CUDAExecutionProvider")


def test_a_file_no_provider_would_take_is_refused_at_once_not_stepped_down(host_for, a_gpu_that_does_not_work,
                                                                          monkeypatch):
    tried = []

    def load(model, providers, *args, **kwargs):
        tried.append(providers[0])
        raise ModelFileInvalid("model.onnx sha256 is 0123..., the card says 4567...")

    monkeypatch.setattr(host_module, "load_model", load)
    host, key = host_for()
    assert tried == [CUDA] and host.status[key] == {"status": "failed", "reason": "model.onnx sha256 is 0123..., "
                                                                                  "the card says 4567..."}
    assert key not in host.degraded


def test_with_int8_asked_tensorrt_steps_aside_for_cuda(host_for, tensorrt_that_cannot_build):
    host, _ = host_for(precision="int8")
    assert host.providers == [CUDA, CPU]


def test_with_providers_set_explicitly_a_provider_failing_at_creation_is_refused(host_for, tensorrt_that_cannot_build):
    host, key = host_for(providers=(TENSORRT, CUDA, CPU))
    assert host.status[key]["status"] == "failed" and "providers are set explicitly" in host.status[key]["reason"]


def test_a_gpu_session_that_fails_its_warm_up_steps_down_to_the_cpu(host_for, a_gpu_that_does_not_work, monkeypatch):
    real_load = host_module.load_model

    def load(model, providers, *args, **kwargs):
        loaded = real_load(model, providers, *args, **kwargs)
        if providers[0] != CUDA:
            return loaded
        loaded = on_cuda(loaded)

        def out_of_memory(images):  # what CUDA raises when the card is full; there is no card here
            raise RuntimeError("CUDA failure 2: out of memory")

        loaded.run = out_of_memory
        return loaded

    monkeypatch.setattr(host_module, "load_model", load)
    host, key = host_for()
    status = host.status[key]
    assert status["status"] == "degraded" and status["provider"] == CPU
    assert status["reason"] == "RuntimeError: CUDA failure 2: out of memory; served on CPUExecutionProvider"


def test_each_worker_takes_its_own_gpu(host_for, a_gpu_that_does_not_work, monkeypatch):
    monkeypatch.setattr(host_module, "cuda_device_count", lambda: 2)
    host, key = host_for(worker_index=3)
    assert host.device_id == 1  # workers 0, 1, 2, 3 on GPUs 0, 1, 0, 1
    assert host.status[key]["device_id"] is None  # its session fell back to the CPU: no GPU to name


def test_without_a_gpu_nothing_is_degraded(host_for):
    host, key = host_for()
    assert host.status[key]["status"] == "ready" and host.status[key]["reason"] is None
    exported = {(s.labels["model"], s.labels["version"]): s.value for s in host.metrics.model_degraded.collect()[0].samples}
    assert exported[("lenet5-digits", str(VERSIONS["lenet5-digits"]))] == 0  # 0, not absent: an alert can tell them apart


@pytest.mark.parametrize("mode, shapes", [("powers_of_two", [1, 2, 4, 8, 16]), ("largest", [16])])
def test_on_a_gpu_every_batch_is_padded_to_one_of_the_configured_shapes(host_for, a_gpu_that_does_not_work,
                                                                        monkeypatch, mode, shapes):
    real_load = host_module.load_model

    def a_session_on_the_gpu(*args, **kwargs):  # what a working CUDA session reports; this one runs on the CPU
        return on_cuda(real_load(*args, **kwargs))

    runs = []  # (thread, batch size) of every run at load
    real_run = PaddedShape.run
    monkeypatch.setattr(PaddedShape, "run", lambda shape, images: runs.append(
        (threading.current_thread().name, len(shape.padded))) or real_run(shape, images))
    monkeypatch.setattr(host_module, "load_model", a_session_on_the_gpu)
    host, key = host_for(max_batch_size=16, gpu_batch_shapes=mode)
    assert host.status[key]["status"] == "ready" and host.status[key]["provider"] == CUDA
    assert list(host.loaded[key].shapes) == host.status[key]["batch_shapes"] == shapes
    # each size's first run (cuDNN's search) on the loading thread, so other models' batches need not wait for it;
    # its timed runs on the thread that runs the batches, whose cuDNN and cuBLAS handles the CUDA provider keeps
    batches_thread = host.executor.submit(lambda: threading.current_thread().name).result()
    assert runs == [run for size in shapes
                    for run in [(threading.current_thread().name, size), *[(batches_thread, size)] * 2]]
    assert host.batchers[key].inline_up_to == 0  # on a GPU the loop reads requests while a batch computes


@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_cuda_graphs_as_configured_replay_every_padded_size(host_for, a_gpu_that_does_not_work, monkeypatch,
                                                            cuda_graphs):
    real_load = host_module.load_model
    asked = []

    def a_session_on_the_gpu(*args, cuda_graphs=False, **kwargs):  # graphed sessions: CPU ones stand in for CUDA's
        asked.append(cuda_graphs)
        loaded = real_load(*args, **kwargs)
        gpu = on_cuda(loaded)
        return replace(gpu, open_graphed_session=gpu.open_session if cuda_graphs else None, graph_buffers_on="cpu")

    threads = set()  # where the graphed sessions ran at load: ONNX Runtime keeps a graph per thread
    real_run = GraphedShape.run
    monkeypatch.setattr(GraphedShape, "run", lambda shape, images: threads.add(threading.current_thread().name)
                        or real_run(shape, images))
    jobs = []  # what went to the batches' thread: one size at a time, so other models' batches run in between
    real_on_batch_thread = ModelHost.on_batch_thread
    monkeypatch.setattr(ModelHost, "on_batch_thread", lambda host, job: jobs.append(job) or real_on_batch_thread(host, job))
    monkeypatch.setattr(host_module, "load_model", a_session_on_the_gpu)
    host, key = host_for(max_batch_size=8, cuda_graphs=cuda_graphs)
    assert asked == [cuda_graphs] and host.status[key]["status"] == "ready"
    assert len(jobs) == 4 * (2 if cuda_graphs else 1)  # each of 4 sizes warmed (and captured) in a job of its own
    assert host.status[key]["cuda_graphs"] is cuda_graphs and host.status[key]["batch_shapes"] == [1, 2, 4, 8]
    # captured and warmed on the thread that runs the batches, or not at all
    assert threads == ({host.executor.submit(lambda: threading.current_thread().name).result()} if cuda_graphs else set())


LOST = "CUDA failure 700: an illegal memory access was encountered ; GPU=0 ; expr=cudaStreamSynchronize(stream)"


def run_twice(host, key: str) -> list:
    """Two requests of one image, one after the other: their answers, or what they raised."""
    model = host.loaded[key].model

    async def both():
        return [await asyncio.gather(host.infer(model, np.zeros((1, *model.input_shape), np.float32),
                                                time.perf_counter() + 10), return_exceptions=True)
                for _ in range(2)]

    return [answer for answers in asyncio.run(both()) for answer in answers]


def test_a_gpu_whose_cuda_context_is_lost_stops_its_worker_once(host_for, a_gpu_that_does_not_work, monkeypatch):
    real_load = host_module.load_model
    monkeypatch.setattr(host_module, "load_model", lambda *args, **kwargs: on_cuda(real_load(*args, **kwargs)))
    host, key = host_for(max_batch_size=4)
    stops = []
    host.stop_worker = lambda: stops.append(True)  # a real worker sends itself SIGTERM (test_resilience.py)

    def lost(shape, images):
        raise RuntimeError(LOST)

    monkeypatch.setattr(PaddedShape, "run", lost)
    answers = run_twice(host, key)
    assert all(isinstance(a, DeviceLost) and "this worker's GPU is lost" in a.message for a in answers)
    assert stops == [True] and host.device_lost_because == LOST


def test_a_lost_context_on_the_cpu_stops_nothing(host_for, monkeypatch):
    host, key = host_for()
    host.stop_worker = lambda: pytest.fail("stopped")

    def lost(self, images):
        raise RuntimeError(LOST)

    monkeypatch.setattr(host_module.LoadedModel, "run", lost)
    assert all(isinstance(a, ModelRunFailed) for a in run_twice(host, key))
    assert host.device_lost_because is None


def test_on_the_cpu_batches_that_compute_in_under_2_ms_run_on_the_event_loop(host_for):
    host, key = host_for(max_batch_size=16)
    assert host.batchers[key].inline_up_to > 0  # LeNet-5: the hand-off to a thread costs about as much as a batch


def test_a_model_whose_warm_up_fails_is_refused_and_the_worker_serves_on(host_for, monkeypatch):
    def out_of_gpu_memory(self, max_batch_size, on_batch_thread=None):  # what a full GPU makes ONNX Runtime raise
        raise RuntimeError("CUDA failure 2: out of memory")

    monkeypatch.setattr(host_module.LoadedModel, "warm_up", out_of_gpu_memory)
    host, key = host_for(precision="fp32")
    assert host.status[key] == {"status": "failed",
                                "reason": "failed while loading or warming up: RuntimeError: CUDA failure 2: out of memory"}


@pytest.mark.skipif(available_cores() < 2, reason="borrowing idle cores needs two")
def test_a_model_that_borrows_idle_cores_spins_only_for_a_lone_request(host_for):
    """A lone request's run holds its event loop anyway; a queued batch's loop reads the next calls meanwhile, and
    spinning threads starved it (cnnserve/serving/runner.py)."""
    host, key = host_for(model="resnet18-digits", workers=2, borrow_idle_cores=True, precision="fp32")
    runner = host.batchers[key].run

    def spins(loaded) -> str:
        return loaded.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    assert (spins(runner.loaded), spins(runner.solo), spins(runner.solo_queued)) == ("0", "1", "0")
