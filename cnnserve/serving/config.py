"""Configuration has one home: this module.

Settings come from defaults, then an optional YAML file (``CNNSERVE_CONFIG``,
default ``cnnserve.yaml`` in the working directory if present), then
``CNNSERVE_*`` environment variables, each overriding the one before. A value that does not parse or is out of
range, a YAML key or a ``CNNSERVE_*`` variable that is no setting, is refused by name. Per-model
batching lives under ``models:`` in the YAML file::

    models_dir: models
    serve: [resnet18-digits, lenet5-digits]   # default: every model found
    model_control_mode: none                   # or poll: load new versions, unload removed ones, while serving
    repository_poll_seconds: 5
    providers: auto                            # or e.g. [CUDAExecutionProvider, CPUExecutionProvider]
    precision: auto                            # auto | fp32 | fp16 | int8
    precision_tolerance: {accuracy: 0.005, mean_iou: 0.01}
    cudnn_conv_algo_search: HEURISTIC          # or EXHAUSTIVE, DEFAULT (GPU only)
    gpu_batch_shapes: powers_of_two            # or largest: one session per model, every batch padded to the maximum
    cuda_graphs: true                          # on CUDA, each padded batch size replays a captured graph
    tensorrt_cache_dir: /var/cache/cnnserve/tensorrt   # engines keyed by file sha256 (default: under the temp dir)
    workers: auto                              # worker processes (each serves every protocol)
    threads: auto                              # ONNX Runtime intra-op threads per worker
    max_batch_size: 64                         # images per ONNX Runtime call
    max_queue_delay_ms: 0                      # wait this long to fill a batch (0: run when idle)
    max_queue_images: 1024                     # queued images per model and worker; beyond: 503
    version_policy: all                        # or latest:N, specific:V1,V2 (Triton's version_policy)
    models:
      lenet5-digits: {max_batch_size: 256, max_queue_delay_ms: 1, version_policy: "latest:1"}

Every key is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..machine import available_cores
from .precision import Tolerance

ENV_PREFIX = "CNNSERVE_"
DEFAULT_CONFIG_FILE = "cnnserve.yaml"
PRECISIONS = ("auto", "fp32", "fp16", "int8")
CONTROL_MODES = ("none", "poll", "explicit")  # Triton's names
CUDNN_SEARCH_MODES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")  # ONNX Runtime's cudnn_conv_algo_search values
GPU_BATCH_SHAPES = ("powers_of_two", "largest")
PER_MODEL_KEYS = {"max_batch_size", "max_queue_delay_ms", "max_queue_images", "version_policy"}
AUTO_ZERO = ("workers", "threads")  # the settings whose 0 means "chosen from the core count", also spelt auto
COUNTS = ("max_batch_size", "max_queue_images", "max_images_per_request", "max_explain_windows", "default_top_k",
          "max_image_pixels", "max_body_bytes", "max_tensor_elements", "grpc_max_message_bytes")  # each at least 1
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# What Kubernetes (and Docker's links) put in every pod for each Service, here the one named cnnserve (or
# cnnserve-<x>): CNNSERVE_SERVICE_HOST, CNNSERVE_PORT_3000_TCP_ADDR and the like. Refused, they stopped every pod.
SERVICE_LINK = re.compile(rf"^{ENV_PREFIX}(\w+_)?(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)$")
# CNNSERVE_* variables that are not settings, read elsewhere: anything else under the prefix is refused by name
OTHER_VARIABLES = (
    f"{ENV_PREFIX}CONFIG",  # the YAML file (load_settings)
    f"{ENV_PREFIX}WORKER_LISTEN",  # set by the arbiter for its workers (serving/patches/circus_sockets.py)
    f"{ENV_PREFIX}CLIENT_API_KEY",  # the load generators' key (loadtests/scenarios/options.py); not API_KEY, which a
    # server would take without a word for its own API_KEYS and run open
    f"{ENV_PREFIX}BASELINE_MODEL", f"{ENV_PREFIX}BASELINE_THREADS",  # loadtests/bench/baseline_fastapi.py
    f"{ENV_PREFIX}COMMIT",  # loadtests/gpu_check.py
    f"{ENV_PREFIX}PAGE_SCREENSHOT",  # tests/serving/test_page.py
)


# One Python worker parses too few requests to keep a GPU busy, and each worker batches only its own clients.
# Measured side by side on an H100 (16 cores, CUDA graphs on, wrk's load, 2026-11-28,
# loadtests/results/2026-11-28-gpu/4-four-and-eight-workers): at 256 clients eight workers served ResNet-18
# 21,873 requests/s against four's 12,166 and ResNet-50 at 224 3,926 against 2,742 (0.91 of that call's in-process
# best against 0.64; 0.74 against the day's highest); at 64 clients ResNet-50 3,087 against 2,547, ResNet-18 the
# same in that call (but 3,593 and 7,275 in two others: 64 connections spread unevenly over eight workers). Sixteen
# with graphs off did worse than eight with them (their batch threads spun in CUDA's synchronization: 11 of 16 cores
# at 256 clients, 2-sixteen-workers), two far worse (6,247 and 1,516). The cost: each worker holds a CUDA context
# and its own sessions.
WORKERS_PER_GPU = 8


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 64  # images per ONNX Runtime call
    max_queue_delay_ms: float = 0.0  # how long an idle model may wait to fill a batch
    max_queue_images: int = 1024  # admission bound per model and worker: beyond it, 503 at once


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions serve (Triton's version_policy): ``all``, ``latest:N`` or ``specific:1,3``."""

    text: str = "all"

    def __post_init__(self):
        kind, _, argument = self.text.partition(":")
        numbers = [a.strip() for a in argument.split(",") if a.strip()]
        valid = (kind == "all" and not argument) or (kind == "latest" and len(numbers) == 1 and numbers[0].isdigit()
                                                    and int(numbers[0]) > 0) or \
                (kind == "specific" and numbers and all(n.isdigit() for n in numbers))
        if not valid:
            raise ValueError(f"version_policy must be all, latest:N (N > 0) or specific:V1,V2..., not {self.text!r}")

    def select(self, versions: list[int]) -> list[int]:
        kind, _, argument = self.text.partition(":")
        if kind == "latest":
            return sorted(versions)[-int(argument):]
        if kind == "specific":
            wanted = {int(n) for n in argument.split(",") if n.strip()}
            return sorted(v for v in versions if v in wanted)
        return sorted(versions)


@dataclass(frozen=True)
class Settings:
    models_dir: Path = Path("models")
    serve: tuple[str, ...] = ()  # empty: every model in models_dir
    # none: the models found at start; poll: follow models_dir while serving; explicit: the models asked for
    # through the repository API (and serve at start)
    model_control_mode: str = "none"
    version_policy: VersionPolicy = VersionPolicy()  # every model's, unless models.<name>.version_policy says otherwise
    version_policies: dict[str, VersionPolicy] = field(default_factory=dict)  # per model (YAML models: only)
    repository_poll_seconds: float = 5.0  # poll: how often each worker looks at models_dir
    providers: tuple[str, ...] = ("auto",)
    precision: str = "auto"
    precision_tolerance: Tolerance = Tolerance()  # how far below FP32's card metrics a variant may be
    # How cuDNN picks convolution algorithms for each new input shape (GPU only). HEURISTIC, by measurement (ResNet-50
    # at 224, H200, loadtests/results/2026-11-26-gpu): first run of a new batch size 0.09 s against EXHAUSTIVE's
    # 0.10-0.48 s, and as fast warm (853 / 6426 images/s at batch 1 / 64 against 894 / 5649); DEFAULT: 136 / 2296.
    cudnn_conv_algo_search: str = "HEURISTIC"
    # On a GPU each batch is padded to one of a few sizes, each on a session of its own, so cuDNN never searches on
    # a live request (runtime.LoadedModel): every power of two up to max_batch_size (seven sessions for 64: seven
    # copies of the weights on the GPU per worker), or the largest alone (one session, every batch computed full).
    gpu_batch_shapes: str = "powers_of_two"
    # TensorRT's engines and timing cache, keyed by each file's sha256 (runtime.TensorrtPlan); keep it across
    # restarts (the Kubernetes GPU overlay mounts a volume here) or every start builds the engines again.
    tensorrt_cache_dir: Path = Path(tempfile.gettempdir()) / "cnnserve-tensorrt"
    # On CUDA, each padded batch size's session replays a CUDA graph captured at load (runtime.GraphedShape): one
    # launch per batch instead of one per kernel. On an H100 (2026-11-28, 1-shared-batches-and-graphs), four
    # workers: ResNet-18 at one client 452 -> 745 requests/s, at 64 clients 8,177 -> 10,633; ResNet-50 at 224 at
    # one client 302 -> 416 (p99 13.2 -> 7.6 ms); at 256 clients both within what a 3 s window resolves. The CPU
    # provider has no graphs: there it does nothing.
    cuda_graphs: bool = True
    workers: int = 0  # 0: chosen from the core count
    threads: int = 0  # 0: chosen from the core count
    batching: bool = True
    max_batch_size: int = Batching.max_batch_size
    max_queue_delay_ms: float = Batching.max_queue_delay_ms
    max_queue_images: int = Batching.max_queue_images
    per_model: dict[str, Batching] = field(default_factory=dict)
    request_timeout_ms: float = 10_000.0  # a request not started by then gets 504; clients may ask for less
    default_top_k: int = 5
    zoom_in_below: float = 0.5  # look again at a digit whose box spans less of the input's side (0: never)
    max_images_per_request: int = 64
    max_explain_windows: int = 256  # occluded copies one POST /explain may run
    max_image_pixels: int = 40_000_000
    max_body_bytes: int = 32 * 1024 * 1024
    body_timeout_s: float = 60.0  # a request body still arriving after this gets 408 (BentoML's own routes: 60 s)
    # A request's headers still arriving after this, from the connection's opening or the previous response's end,
    # get 408 and the connection closed (cnnserve/serving/patches/uvicorn_headers.py; nginx's CIS benchmark: 10 s)
    header_timeout_s: float = 10.0
    max_tensor_elements: int = 16 * 1024 * 1024
    grpc_enabled: bool = True
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 3001
    grpc_max_message_bytes: int = 32 * 1024 * 1024
    # A gRPC connection is asked to go (GOAWAY) after this long, so clients reconnect and land on another worker or
    # pod (0: never); calls in flight then have the request timeout to finish.
    grpc_max_connection_age_s: float = 300.0
    warmup: bool = True
    access_log: bool = False
    fast_lane: bool = True
    spread_connections: bool = True  # one SO_REUSEPORT socket per worker (cnnserve/serving/patches/circus_sockets.py)
    coalesce_writes: bool = True  # each HTTP response in one socket write (cnnserve/serving/patches/uvicorn_writes.py)
    borrow_idle_cores: bool = True
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # plain keys; hashed at start, never logged
    api_keys_file: str = ""  # one SHA-256 hex digest per line
    admin_api_keys: tuple[str, ...] = field(default=(), repr=False)  # the repository API's load and unload
    admin_api_keys_file: str = ""
    auth_open_paths: tuple[str, ...] = ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")

    def version_policy_for(self, model: str) -> VersionPolicy:
        return self.version_policies.get(model, self.version_policy)

    def batching_for(self, model: str) -> Batching:
        return self.per_model.get(model, Batching(self.max_batch_size, self.max_queue_delay_ms, self.max_queue_images))

    def inference_workers(self, cores: int | None = None, gpus: int = 0) -> int:
        """Worker processes: ``WORKERS_PER_GPU`` per GPU when the models run on ``gpus`` GPUs (each worker holds
        one CUDA context; worker *i* on GPU *i* mod ``gpus``), no more than the cores; on the CPU, as many as fit
        the cores with ``threads`` each."""
        cores = cores or available_cores()
        if self.workers > 0:
            return self.workers
        if gpus > 0:
            return max(gpus, min(WORKERS_PER_GPU * gpus, cores))
        return max(1, cores // max(1, self.threads or 1))

    def session_threads(self, cores: int | None = None, gpus: int = 0) -> int:
        if self.threads > 0:
            return self.threads
        return max(1, (cores or available_cores()) // self.inference_workers(cores, gpus))


def _check(name: str, raw: Any) -> None:
    """Refuse a value (once coerced) outside a setting's range or choices, naming the setting."""
    if name in COUNTS and raw < 1:
        raise ValueError(f"{name} must be at least 1, not {raw!r}")
    if name in AUTO_ZERO and raw < 0:
        raise ValueError(f"{name} must be 0 (auto: chosen from the core count) or more, not {raw!r}")
    if name == "max_queue_delay_ms" and not raw >= 0:  # NaN too
        raise ValueError(f"max_queue_delay_ms must be 0 or more (0: run when idle), not {raw!r}")
    if name == "grpc_port" and not 0 < raw < 65536:
        raise ValueError(f"grpc_port must be a port, 1 to 65535, not {raw!r}")
    if name == "zoom_in_below" and not 0.0 <= float(raw) <= 1.0:
        raise ValueError(f"zoom_in_below is a share of the input's side, from 0 (never zoom) to 1, not {raw!r}")
    if name == "grpc_max_connection_age_s" and float(raw) < 0:
        raise ValueError(f"grpc_max_connection_age_s is seconds (0: connections never age), not {raw!r}")
    if name == "header_timeout_s" and not 0 < float(raw) < float("inf"):  # NaN too
        raise ValueError(f"header_timeout_s must be a positive number of seconds, not {raw!r}")
    if name in ("repository_poll_seconds", "body_timeout_s", "request_timeout_ms") and not float(raw) > 0:  # NaN too
        raise ValueError(f"{name} must be positive, not {raw!r}")
    choices = {"model_control_mode": CONTROL_MODES, "gpu_batch_shapes": GPU_BATCH_SHAPES, "precision": PRECISIONS,
               "cudnn_conv_algo_search": CUDNN_SEARCH_MODES}.get(name)
    if choices and (str(raw).upper() if name == "cudnn_conv_algo_search" else raw) not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")


def _parse(name: str, raw: Any, current: Any, source: str) -> Any:
    """A YAML or environment value coerced to the type of the field's default and checked by ``_check``; any
    failure names the setting, where the value came from (``source``: a variable or the YAML file) and the value."""
    try:
        value = _coerce(name, raw, current)
        _check(name, value)
        return value
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} = {raw!r} from {source}: {error}") from None


def _coerce(name: str, raw: Any, current: Any) -> Any:
    word = str(raw).strip().lower()
    if isinstance(current, bool):
        if not isinstance(raw, bool) and word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(f"{name} is true or false (1/0, true/false, yes/no, on/off)")
        return raw if isinstance(raw, bool) else word in TRUE_WORDS
    if isinstance(current, int):
        if word == "auto" and name not in AUTO_ZERO:
            raise ValueError(f"{name} is a whole number (only {' and '.join(AUTO_ZERO)} take auto)")
        return 0 if word == "auto" else int(raw)
    if isinstance(current, VersionPolicy):
        return VersionPolicy(str(raw).strip())
    if isinstance(current, Tolerance):  # YAML {accuracy: 0.005, mean_iou: 0.01} or "accuracy=0.005,mean_iou=0.01"
        items = raw if isinstance(raw, dict) else dict(kv.split("=", 1) for kv in str(raw).split(",") if kv.strip())
        unknown = set(items) - {"accuracy", "mean_iou"}
        if unknown:
            raise ValueError(f"precision_tolerance takes accuracy and mean_iou, not {', '.join(sorted(unknown))}")
        return replace(current, **{k.strip(): float(v) for k, v in items.items()})
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, Path):
        return Path(raw)
    if isinstance(current, tuple):
        items = raw if isinstance(raw, list) else [s for s in str(raw).split(",")]
        return tuple(str(s).strip() for s in items if str(s).strip())
    if name == "cudnn_conv_algo_search":
        return str(raw).upper()
    return type(current)(raw)


def per_model_options(models: Any, path: Path) -> dict[str, dict]:
    """The YAML's ``models:`` section checked: a mapping of model name to its own keys (none: the global values)."""
    if not isinstance(models or {}, dict):
        raise ValueError(f"models in {path} must map model names to their settings, not be a {type(models).__name__}")
    options_of = {str(model): options or {} for model, options in (models or {}).items()}
    for model, options in options_of.items():
        if not isinstance(options, dict):
            raise ValueError(f"models.{model} in {path} must be a mapping of {', '.join(sorted(PER_MODEL_KEYS))}, "
                             f"not {options!r}")
        if unknown := set(options) - PER_MODEL_KEYS:
            raise ValueError(f"unknown key(s) under models.{model} in {path}: {', '.join(sorted(unknown))} "
                             f"(a model takes {', '.join(sorted(PER_MODEL_KEYS))})")
    return options_of


# Settings that existed and were taken out, with why: a deployment that still sets one learns what became of it.
REMOVED = {
    "shared_batches": "was removed: on an H100 one batcher per GPU lost a third to a half of the requests/s against "
                      "each worker batching its own (loadtests/results/2026-11-28-gpu); delete the setting",
}


def load_settings(environ: dict[str, str] | None = None, config_file: Path | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    settings = Settings()
    path = config_file or Path(environ.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_FILE))
    values: dict[str, Any] = {}
    if path.exists():
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must be a mapping of setting: value, not a {type(values).__name__}")
    elif f"{ENV_PREFIX}CONFIG" in environ:
        raise FileNotFoundError(f"{ENV_PREFIX}CONFIG names {path}, which does not exist")
    known = {f.name for f in fields(Settings)} - {"per_model", "version_policies"}
    if gone := sorted({*values, *(k[len(ENV_PREFIX):].lower() for k in environ if k.startswith(ENV_PREFIX))}
                      & set(REMOVED)):
        raise ValueError("; ".join(f"{name} ({path} or {ENV_PREFIX}{name.upper()}) {REMOVED[name]}" for name in gone))
    unknown = set(values) - known - {"models"}
    if unknown:
        raise ValueError(f"unknown configuration key(s) in {path}: {', '.join(sorted(unknown))}")
    variables = {ENV_PREFIX + name.upper(): name for name in known}
    if strays := sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in variables
                        and k not in OTHER_VARIABLES and not SERVICE_LINK.match(k)):
        close = {k: difflib.get_close_matches(k, [*variables, *OTHER_VARIABLES], n=1) for k in strays}
        raise ValueError("unknown setting variable(s): " + ", ".join(
            k + (f" (did you mean {close[k][0]}?)" if close[k] else "") for k in strays)
            + "; the settings are in docs/configuration.md")
    updates = {k: _parse(k, v, getattr(settings, k), str(path)) for k, v in values.items() if k in known}
    for key, name in variables.items():
        if key in environ:
            updates[name] = _parse(name, environ[key], getattr(settings, name), key)
    settings = replace(settings, **updates)
    models = {model: {k: _parse(k, v, getattr(settings, k), f"models.{model} in {path}") for k, v in options.items()}
              for model, options in per_model_options(values.get("models"), path).items()}
    batching = Batching(settings.max_batch_size, settings.max_queue_delay_ms, settings.max_queue_images)
    per_model = {model: replace(batching, **{k: v for k, v in options.items() if k != "version_policy"})
                 for model, options in models.items()}
    version_policies = {model: options["version_policy"] for model, options in models.items()
                        if "version_policy" in options}
    return replace(settings, per_model=per_model, version_policies=version_policies)
