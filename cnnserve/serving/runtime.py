"""ONNX Runtime sessions: provider choice, integrity checks, warm-up, running.

Provider choice is TensorRT ▸ CUDA ▸ CPU among those that can really work
here. ``onnxruntime-gpu`` lists CUDA and TensorRT as available even on a
machine with no GPU (and then logs errors when a session asks for them), so a
GPU provider is only chosen when the CUDA driver loads and reports a device,
and TensorRT only when its library loads too. The precision variant follows:
FP16 on a GPU when the model ships one; on the CPU the fastest variant within
tolerance of FP32's accuracy, chosen by timing (precision.py, host.py); an
explicit ``precision`` setting wins.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import onnxruntime as ort

from ..contract.card import BOXES, INPUT_NAME, PROBABILITIES, file_sha256
from .repository import ModelVersion

log = logging.getLogger("cnnserve.runtime")
T = TypeVar("T")

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PREFERENCE = (TENSORRT, CUDA, CPU)
GPU_PROVIDERS = {TENSORRT, CUDA}
# CUDA errors after which "the process must be terminated and relaunched" (CUDA 13.0's driver_types.h says so of
# each): an error contained by the GPU (226, Hopper's containment), an illegal address (700), a launch timeout
# (702), a device-side assert (710), a hardware stack error, an illegal instruction, a misaligned address, an
# invalid address space or program counter, a launch failure (714-719), a tensor memory leak (721), an MPS client
# terminated (810), an external device's error (911).
CONTEXT_LOST = frozenset({226, 700, 702, 710, 714, 715, 716, 717, 718, 719, 721, 810, 911})
CUDA_FAILURE = re.compile(r"\bCUDA failure (\d+)")  # ONNX Runtime's words ("CUDA failure 700: an illegal ...")
# ONNX Runtime 1.18 and later are built against TensorRT 10; its provider library needs the parser too, which
# NVIDIA's packages ship apart (libnvonnxparsers10): with one missing the provider cannot load.
TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvonnxparser.so.10")


@functools.cache
def cuda_device_count() -> int:
    """Devices the CUDA driver reports; 0 when there is no driver or no GPU."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def preload_gpu_libraries(available: list[str]) -> bool:
    """With a GPU build, load NVIDIA's CUDA and cuDNN libraries before any session asks for them: installed as
    wheels (the ``gpu`` extra's ``[cuda,cudnn]``) they sit in site-packages, where the CUDA provider does not
    look on its own (``onnxruntime.preload_dlls``, ONNX Runtime 1.21 and later). In a CUDA image they come from
    the system and this finds them there. Whether it ran."""
    if CUDA not in available or not hasattr(ort, "preload_dlls"):
        return False
    ort.preload_dlls()
    return True


@functools.cache
def tensorrt_loads() -> bool:
    """Whether every library ONNX Runtime's TensorRT provider links loads here."""
    try:
        for name in TENSORRT_LIBRARIES:
            ctypes.CDLL(name)
    except OSError:
        return False
    return True


@functools.cache
def tensorrt_version() -> str:
    """TensorRT's version as its library reports it (10.3.0), or "none"."""
    try:
        number = ctypes.CDLL(TENSORRT_LIBRARIES[0]).getInferLibVersion()
    except (OSError, AttributeError):
        return "none"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def choose_providers(
    requested: tuple[str, ...], available: list[str], gpu_devices: int, tensorrt_usable: bool
) -> list[str]:
    """The execution providers to ask for, best first, always ending in CPU.

    ``requested`` is ("auto",) or an explicit list; an explicit provider that
    this ONNX Runtime build does not have is an error, a GPU provider with no
    GPU present is dropped with a warning.
    """
    if requested == ("auto",):
        wanted = list(PREFERENCE)
        if gpu_devices and not GPU_PROVIDERS & set(available):
            log.warning("%d NVIDIA GPU(s) present, but this ONNX Runtime build (%s) has no GPU provider: the models "
                        "run on the CPU. On a GPU host install onnxruntime-gpu instead: pip install '.[gpu]' "
                        "(make serve-gpu does)", gpu_devices, ort.__version__)
    else:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"provider(s) {', '.join(missing)} not in this ONNX Runtime; available: {available}")
        wanted = list(requested)
    chosen = []
    for provider in wanted:
        if provider not in available:
            continue
        if provider in GPU_PROVIDERS and gpu_devices == 0:
            if requested != ("auto",):
                log.warning("%s requested but no GPU is present; falling back", provider)
            continue
        if provider == TENSORRT and not tensorrt_usable:
            if requested != ("auto",):
                log.warning("%s requested but TensorRT's libraries (%s) do not all load; falling back", provider,
                            ", ".join(TENSORRT_LIBRARIES))
            continue
        chosen.append(provider)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def choose_variant(precision: str, providers: list[str], variants: list[str]) -> str:
    """A variant's name is taken as asked (it must exist); ``auto`` without timing: FP16 on CUDA when shipped,
    else FP32."""
    if precision != "auto":
        if precision == "int8" and providers[0] == TENSORRT:
            raise ValueError("TensorRT cannot build the INT8 files (asymmetric uint8 quantization; TensorRT takes "
                             "symmetric int8 only): serve fp32, from which TensorRT builds FP16, or INT8 on CUDA or "
                             "the CPU")
        if precision not in variants:
            raise ValueError(
                f"precision {precision} requested but only {variants} are present; derived files are made by "
                "`python -m cnnserve.training derive <version folder>` (or `make variants`)"
            )
        return precision
    if providers[0] == CUDA and "fp16" in variants:
        return "fp16"
    return "fp32"  # TensorRT too: it builds its FP16 engine from the FP32 graph (trt_fp16_enable)


# ONNX Runtime's QDQ propagation moves an INT8 file's first QuantizeLinear above the max pooling that follows the
# float first convolution (variants.kept_float), and that MaxPool then runs on uint8 in the plain NCHW kernel:
# 1.2 ms of LeNet-5's 2.6 ms at batch 16, 5.0 of ResNet-18's 21. Without the propagation it stays in the float
# blocked layout (0.04 ms) and the outputs are bit for bit the same (max commutes with a monotone quantization).
# INT8 at batch 16, one thread, ONNX Runtime 1.32, AMD EPYC: LeNet-5 2.59 -> 0.84 ms, ResNet-18 21.0 -> 15.7,
# VGG-11 12.6 -> 8.5; FP32 files have no QDQ nodes and are unaffected.
DISABLED_OPTIMIZERS = "QDQPropagationTransformer"


def session_options(threads: int, spin: bool = False) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.add_session_config_entry("optimization.disable_specified_optimizers", DISABLED_OPTIMIZERS)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    # Idle worker threads must not spin: other workers and the event loops need the cores. The
    # exception is a session used only while it holds every core (cnnserve/serving/runner.py): its threads
    # spin between the steps of one run (ResNet-18 at batch 1: 4.1 ms instead of 5.3) and stop
    # when the run returns, before the cores are handed back.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3
    return options


@dataclass(frozen=True)
class TensorrtPlan:
    """The one TensorRT engine a model file gets, and where it is cached.

    Its optimisation profile spans batch 1 to the batcher's largest at the card's input (without a profile
    TensorRT builds an engine per new shape, each possibly a minute; each padded batch size's session loads the
    same cached engine). Engine and timing cache live in ``cache_dir`` (``tensorrt_cache_dir``,
    mounted persistently by the Kubernetes GPU overlay) under a prefix of the model's name, variant, the
    file's sha256 and the ONNX Runtime and TensorRT versions, so a new version, the same version's file changed,
    or an upgraded image (whose TensorRT refuses an older engine) never loads an old engine. FP16 comes from the
    FP32 graph (``trt_fp16_enable``); the INT8 files are not for TensorRT (``choose_variant``).
    """

    cache_dir: Path
    prefix: str
    input_shape: tuple[int, ...]
    max_batch_size: int

    @classmethod
    def for_file(cls, model: ModelVersion, variant: str, sha256: str, cache_dir: Path, max_batch_size: int) -> TensorrtPlan:
        versions = f"ort{ort.__version__}-trt{tensorrt_version()}"
        return cls(cache_dir, f"{model.name}-{variant}-{sha256[:16]}-{versions}", tuple(model.input_shape),
                   max_batch_size)

    def shapes(self, batch: int) -> str:
        return f"{INPUT_NAME}:{'x'.join(map(str, (batch, *self.input_shape)))}"

    def options(self) -> dict:
        return {
            "trt_fp16_enable": True,
            "trt_profile_min_shapes": self.shapes(1), "trt_profile_opt_shapes": self.shapes(self.max_batch_size),
            "trt_profile_max_shapes": self.shapes(self.max_batch_size),
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.cache_dir),
            "trt_engine_cache_prefix": self.prefix,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(self.cache_dir),
        }


def provider_options(provider: str, device_id: int = 0, cudnn_search: str = "HEURISTIC",
                     tensorrt: TensorrtPlan | None = None, cuda_graph: bool = False) -> dict:
    if provider == TENSORRT:
        if tensorrt is None:
            raise ValueError("TensorRT needs the model's TensorrtPlan (its profile and cache)")
        return {"device_id": device_id, **tensorrt.options()}
    if provider == CUDA:
        graph = {"enable_cuda_graph": "1"} if cuda_graph else {}
        return {"device_id": device_id, "cudnn_conv_algo_search": cudnn_search, **graph}
    return {}


def usable_gpus(requested: tuple[str, ...]) -> int:
    """How many GPUs the models will run on: those the CUDA driver reports, when this ONNX Runtime has a GPU
    provider and ``providers`` allows one; 0 otherwise."""
    available = ort.get_available_providers()
    providers = choose_providers(requested, available, cuda_device_count(), tensorrt_loads())
    return cuda_device_count() if providers[0] in GPU_PROVIDERS else 0


def batch_shapes(max_batch_size: int, mode: str) -> list[int]:
    """The batch sizes a GPU session runs (``gpu_batch_shapes``): every power of two below ``max_batch_size`` and
    the maximum itself, or the maximum alone."""
    if mode == "largest":
        return [max_batch_size]
    return sorted({*(2**i for i in range(max_batch_size.bit_length()) if 2**i < max_batch_size), max_batch_size})


def cuda_context_lost(exc: BaseException) -> bool:
    """Whether ONNX Runtime's error names a CUDA error after which this process's context is unusable."""
    return any(int(code) in CONTEXT_LOST for code in CUDA_FAILURE.findall(str(exc)))


class ModelInvalid(Exception):
    """The model file is missing, corrupt, or does not match its card."""


class ModelFileInvalid(ModelInvalid):
    """The file itself is at fault (missing, its sha256, its graph against the card): no provider would take it."""


def run_here(function: Callable[[], T]) -> T:
    return function()


def run_with_binding(session: ort.InferenceSession, images: np.ndarray, output_names: list[str]) -> list[np.ndarray]:
    """A GPU session's run: the input copied over and the outputs back within ONNX Runtime's own run."""
    binding = session.io_binding()
    binding.bind_cpu_input(INPUT_NAME, images)
    for name in output_names:
        binding.bind_output(name)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class PaddedShape:
    """One batch size on a session of its own (``LoadedModel.pad_batches``). A smaller batch is copied into the
    front of ``padded``: the rows after it hold an earlier batch's images, and their answers are dropped."""

    def __init__(self, session: ort.InferenceSession, padded: np.ndarray, output_names: list[str]):
        self.session, self.padded, self.output_names = session, padded, output_names

    def fill(self, images: np.ndarray) -> np.ndarray:
        if len(images) < len(self.padded):
            self.padded[:len(images)] = images
            return self.padded
        return images

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return run_with_binding(self.session, self.fill(images), self.output_names)


class GraphedShape(PaddedShape):
    """A padded batch size whose session replays a CUDA graph (``cuda_graphs``, ONNX Runtime's
    ``enable_cuda_graph``): one launch for the whole model instead of one per kernel, where a small model's
    batch spent its time. ResNet-18 at 64 px on an H100 took 0.84 ms per call at batch 1 and 0.92 at 16 in
    process (loadtests/results/2026-11-27-gpu/1-current-models), launching about 60 kernels.

    A graph reads and writes the addresses it was captured with, so the input and outputs live in buffers on the
    device, bound once; each batch is copied into the input's (``update_inplace``) and the outputs are copied
    out, since the next batch overwrites them. ``device`` is where the buffers live: the session's GPU, or the
    CPU in tests, where the same binding runs without a graph. ONNX Runtime keeps a session's graph per thread
    (the CUDA provider's per-thread context), so it must be captured on the thread that runs the batches.
    """

    def __init__(self, session: ort.InferenceSession, padded: np.ndarray, output_names: list[str],
                 device: tuple[str, int]):
        super().__init__(session, padded, output_names)
        declared = {o.name: o for o in session.get_outputs()}
        self.input = ort.OrtValue.ortvalue_from_shape_and_type(padded.shape, np.float32, *device)
        self.outputs = []
        for name in output_names:
            rows = declared[name].shape[1:]
            if not all(isinstance(d, int) for d in rows) or declared[name].type not in NUMPY_TYPES:
                raise ModelInvalid(f"output {name!r} is {declared[name].type} {declared[name].shape}: a CUDA graph "
                                   "needs a fixed shape and a float type")
            self.outputs.append(ort.OrtValue.ortvalue_from_shape_and_type(
                (len(padded), *rows), NUMPY_TYPES[declared[name].type], *device))
        self.binding = session.io_binding()
        self.binding.bind_ortvalue_input(INPUT_NAME, self.input)
        for name, value in zip(output_names, self.outputs):
            self.binding.bind_ortvalue_output(name, value)

    def capture(self) -> None:
        """Within the first run ONNX Runtime runs the model as often as its allocations need, then captures and
        replays the graph; the second replays it, so a graph that cannot replay fails here, at load."""
        for _ in range(2):
            self.run(self.padded)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        self.input.update_inplace(np.ascontiguousarray(self.fill(images), np.float32))
        self.session.run_with_iobinding(self.binding)
        return [np.array(value.numpy()) for value in self.outputs]


@dataclass
class LoadedModel:
    """A session and how to run it.

    ``shapes`` (set on a GPU, ``pad_batches``): every run is padded to the smallest of a few batch sizes that holds
    it, and each size runs on a session of its own. ONNX Runtime's CUDA convolutions choose their cuDNN algorithms
    again whenever the input shape differs from the previous run's, even for shapes seen before: ResNet-50 at 224
    on an H200 (ONNX Runtime 1.31.1, cuDNN 9.14) took 5 ms per run at one batch size and 69 ms (HEURISTIC search)
    or 367 ms (EXHAUSTIVE) cycling through 30-33 images (loadtests/results/2026-11-26-gpu/README.md). A session
    that only ever sees one shape never searches again. With one shape alone (``gpu_batch_shapes: largest``) a
    batch of 8 computes a full batch of 64 (ResNet-50: 9.6 ms for one image instead of 1.7).
    """

    model: ModelVersion
    session: ort.InferenceSession
    providers: list[str]
    variant: str
    output_names: list[str]
    open_session: Callable[[], ort.InferenceSession] | None = None  # another session like ``session`` (load_model)
    # ... that captures a CUDA graph (``cuda_graphs``, on CUDA only): ``pad_batches`` gives each shape one
    open_graphed_session: Callable[[], ort.InferenceSession] | None = None
    device_id: int = 0  # the GPU its sessions run on
    graph_buffers_on: str = "cuda"  # where a graphed session's input and outputs live (tests, with no GPU: "cpu")
    # batch size -> its session and padded input (reused: one run at a time per model, the batcher's)
    shapes: dict[int, PaddedShape] = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] in GPU_PROVIDERS

    @property
    def graphed(self) -> bool:
        return any(isinstance(shape, GraphedShape) for shape in self.shapes.values())

    def pad_batches(self, sizes: list[int], on_batch_thread: Callable[[Callable[[], T]], T] = run_here) -> None:
        """Pad every run to the smallest of ``sizes`` that holds it, on that size's own session (the largest
        size's is ``session``). If the other sessions cannot be made (out of GPU memory: each holds its own copy
        of the weights), every run is padded to the largest, on ``session`` alone, and the log says why.

        With ``open_graphed_session`` every size gets a session that replays a CUDA graph, captured here through
        ``on_batch_thread`` (which runs a function on the thread that will run the batches, and waits for it), one
        size at a time, so the batches of the worker's other models run in between. A model whose graph cannot be
        made (ONNX Runtime refuses a graph with nodes off the GPU; capture can fail) runs without, and the log
        says why."""
        if self.open_graphed_session is not None:
            graphed: dict[int, GraphedShape] = {}
            try:
                for size in sorted(sizes):
                    session = self.open_graphed_session()
                    if session.get_providers()[0] != self.providers[0]:
                        raise ModelInvalid(f"a session came up on {session.get_providers()[0]}")
                    graphed[size] = GraphedShape(session, self.zeros(size), self.output_names,
                                                 (self.graph_buffers_on, self.device_id))
                    on_batch_thread(graphed[size].capture)
                self.shapes = graphed
                return
            except Exception as exc:  # noqa: BLE001  (ONNX Runtime raises its own types)
                graphed.clear()  # their sessions and buffers go before the sessions without graphs come
                log.error("model %s: CUDA graphs could not be made (%s); its batches run without them",
                          self.model.key, exc)
        largest = max(sizes)
        try:
            sessions = {size: self.open_session() for size in sizes if size != largest}
            elsewhere = {s.get_providers()[0] for s in sessions.values()} - {self.providers[0]}
            if elsewhere:
                raise ModelInvalid(f"a session came up on {', '.join(elsewhere)}")
        except Exception as exc:  # noqa: BLE001  (ONNX Runtime raises its own types, CUDA's out-of-memory among them)
            log.error("model %s: a session per batch shape could not be made (%s); every batch is padded to %d "
                      "instead (gpu_batch_shapes: largest)", self.model.key, exc, largest)
            sessions = {}
        sessions[largest] = self.session
        self.shapes = {size: PaddedShape(sessions[size], self.zeros(size), self.output_names)
                       for size in sorted(sessions)}

    def zeros(self, size: int) -> np.ndarray:
        return np.zeros((size, *self.model.input_shape), np.float32)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities [N, K] and boxes [N, 4] (None for classification-only models)."""
        rows = len(images)
        size = next((size for size in self.shapes if size >= rows), None)
        if size is not None:
            outputs = dict(zip(self.output_names, self.shapes[size].run(images)))
        elif self.on_gpu:  # not padded (gpu_check's in-process sessions), or more rows than the largest shape
            outputs = dict(zip(self.output_names, run_with_binding(self.session, images, self.output_names)))
        else:
            outputs = dict(zip(self.output_names, self.session.run(self.output_names, {INPUT_NAME: images})))
        boxes = outputs.get(BOXES)
        return outputs[PROBABILITIES][:rows], None if boxes is None else boxes[:rows]

    def warm_sizes(self, max_batch_size: int) -> list[int]:
        """The batch sizes warm-up runs: with padded batches the shapes runs have (the first run of each makes
        cuDNN choose its session's algorithms, which must not happen on a live request); on the CPU, where a new
        shape costs no search, the powers of two up to the maximum, which give the cost table."""
        if self.shapes:
            return list(self.shapes)
        return batch_shapes(max_batch_size, "powers_of_two")

    def warm_up(self, max_batch_size: int, on_batch_thread: Callable[[Callable[[], T]], T] = run_here) -> dict[int, float]:
        """Run each of ``warm_sizes`` and return seconds per size, the model's own cost
        table. A size whose first run (which allocates) took under 50 ms is timed
        twice more and the fastest kept; longer ones are not re-run on the CPU, as only
        short sizes decide anything. On a GPU the first run of a shape also searches
        cuDNN's algorithms, so it never counts: ResNet-18 on an H200 timed 436 ms for
        batch 64 that way, against 1.6 ms warm (loadtests/results/2026-11-26-gpu).

        On a GPU the two timed runs of each size go through ``on_batch_thread``, one size at a time (see
        ``pad_batches``): they make that thread's cuDNN and cuBLAS handles. The first run, which searches (or
        builds TensorRT's engine, possibly for a minute), stays on this thread, so the worker's other models'
        batches do not wait for it; a graphed size's first runs were its capture."""
        seconds = {}
        for size in self.warm_sizes(max_batch_size):
            images = self.zeros(size)
            if not self.on_gpu:
                timings = [self.timed_run(images)]
                if timings[0] < 0.05:
                    timings += [self.timed_run(images) for _ in range(2)]
                seconds[size] = min(timings)
                continue
            if not self.graphed:  # a graphed session runs on the batches' thread alone (GraphedShape)
                self.run(images)
            seconds[size] = on_batch_thread(lambda images=images: min(self.timed_run(images) for _ in range(2)))
        return seconds

    def timed_run(self, images: np.ndarray) -> float:
        began = time.perf_counter()
        self.run(images)
        return time.perf_counter() - began


def verify_contract(model: ModelVersion, session: ort.InferenceSession) -> list[str]:
    """Check the graph's inputs and outputs against the card; return output names."""
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ModelFileInvalid(f"graph inputs are {[i.name for i in inputs]}, the contract wants [{INPUT_NAME!r}]")
    if inputs[0].type != "tensor(float)":
        raise ModelFileInvalid(f"input {INPUT_NAME!r} is {inputs[0].type}, the contract wants tensor(float)")
    shape = inputs[0].shape
    if len(shape) != 4 or list(shape[1:]) != list(model.input_shape):
        raise ModelFileInvalid(f"input shape {shape} does not match the card's {model.card['input']['shape']}")
    outputs = {o.name: o for o in session.get_outputs()}
    expected = [o["name"] for o in model.card["outputs"]]
    if set(outputs) != set(expected):
        raise ModelFileInvalid(f"graph outputs are {sorted(outputs)}, the card says {sorted(expected)}")
    classes = outputs[PROBABILITIES].shape[-1]
    if isinstance(classes, int) and classes != len(model.labels):
        raise ModelFileInvalid(f"graph has {classes} classes, the card {len(model.labels)} labels")
    return expected


def load_model(
    model: ModelVersion, providers: list[str], precision: str, threads: int, cache_dir: Path, spin: bool = False,
    device_id: int = 0, cudnn_search: str = "HEURISTIC", max_batch_size: int = 64, cuda_graphs: bool = False,
) -> LoadedModel:
    """A checked session for the chosen variant; ``cache_dir`` holds TensorRT's engines, ``max_batch_size`` bounds
    their profile; ``cuda_graphs``: on CUDA, ``pad_batches`` gives each batch size a session replaying a graph."""
    variant = choose_variant(precision, providers, model.variants())
    path, expected_sha = model.file_for(variant)
    if not path.exists():
        raise ModelFileInvalid(f"{path.name} is missing")
    if expected_sha is None:
        log.warning("model %s: card records no sha256 for %s; integrity not checked", model.key, path.name)
    elif (actual := file_sha256(path)) != expected_sha:
        raise ModelFileInvalid(f"{path.name} sha256 is {actual[:12]}..., the card says {expected_sha[:12]}...")
    tensorrt = None
    if TENSORRT in providers:
        tensorrt = TensorrtPlan.for_file(model, variant, expected_sha or file_sha256(path), cache_dir, max_batch_size)
        cache_dir.mkdir(parents=True, exist_ok=True)  # TensorRT makes one folder level, and fails if a worker won
    # enable_fallback=0: when a provider fails at creation, ONNX Runtime would otherwise retry on its own list
    # with every provider option dropped (device 0, cuDNN's exhaustive search), saying so only on stdout.
    def opener(cuda_graph: bool = False) -> Callable[[], ort.InferenceSession]:
        return functools.partial(
            ort.InferenceSession, str(path), session_options(threads, spin), enable_fallback=0,
            providers=[(p, provider_options(p, device_id, cudnn_search, tensorrt, cuda_graph)) for p in providers])

    open_session = opener()
    try:
        session = open_session()
    except Exception as exc:  # noqa: BLE001  (ONNX Runtime raises its own types for corrupt files)
        raise ModelInvalid(f"ONNX Runtime cannot load {path.name} on {providers[0]}: {exc}") from None
    output_names = verify_contract(model, session)
    graphed = opener(cuda_graph=True) if cuda_graphs and session.get_providers()[0] == CUDA else None
    return LoadedModel(model, session, session.get_providers(), variant, output_names, open_session, graphed,
                       device_id)
