"""Where a real server's time goes under load: py-spy samples every worker while wrk loads one route at a time.

    python -m loadtests.bench.profile --model lenet5-digits --routes v2-binary noop-v2 noop --clients 64

Starts ``bentoml serve`` on 127.0.0.1 with the model (and the no-op route),
then for each route: an unprofiled wrk window for the request rate and the
server's CPU per request (every worker process, from psutil), and a second
window with py-spy attached to each worker. Each Python sample is put in the layer
of its innermost recognisable frame (ONNX Runtime, metrics, JSON, cnnserve,
uvicorn, ...), so the report says how many microseconds of a request each
layer costs. Writes ``profile-<model>-c<clients>.{md,json,png}`` under
``loadtests/results/<date>/``, and the raw stacks (``.collapsed``, open them
in speedscope or flamegraph.pl) beside them. py-spy needs ptrace: root, or
``CAP_SYS_PTRACE`` in a container.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from cnnserve.serving.repository import discover

from ..local_server import running_server
from .cpu_budget import thread_seconds
from .machine import describe_machine
from .noop_routes import NOOP_SERVICE
from .served import ROUTES, route_loads
from .wrk import wrk

REPO_ROOT = Path(__file__).resolve().parents[2]
PY_SPY = Path(sys.executable).parent / "py-spy"
SAMPLE_RATE = 200
# (layer, text in a py-spy frame "function (file:line)"), tried from the innermost frame outwards
LAYERS = (
    ("ONNX Runtime", "(onnxruntime/"),
    ("metrics (prometheus-client)", "(prometheus_client/"),
    ("JSON", "(json/"),
    ("image decoding (Pillow)", "(PIL/"),
    ("multipart parsing", "(multipart/"),
    ("multipart parsing", "(starlette/formparsers.py"),
    ("numpy", "(numpy/"),
    ("response writing (uvicorn send, socket write)", "RequestResponseCycle.send ("),
    ("cnnserve", "(cnnserve/"),
    ("Starlette", "(starlette/"),
    ("uvicorn and httptools (HTTP parsing, ASGI)", "(uvicorn/"),
    ("asyncio event loop", "(asyncio/"),
)
OTHER = "other"
NATIVE = "threads without Python frames (ONNX Runtime's pool)"
WAITING = ("(threading.py", "(queue.py", "_worker (concurrent/futures/thread.py")  # parked pool threads py-spy may count


def layer_of(frames: list[str]) -> str | None:
    """The layer of one sample (frames outermost first); None for a thread parked in a wait."""
    if any(waiting in frames[-1] for waiting in WAITING):
        return None
    for frame in reversed(frames):
        for layer, marker in LAYERS:
            if marker in frame:
                return layer
    return OTHER


def read_collapsed(paths: list[Path]) -> tuple[collections.Counter, collections.Counter, set[int]]:
    """Samples per layer and per cnnserve function (inclusive), and the threads seen running Python, from
    py-spy's raw (collapsed stack, ``--threads``) files."""
    layers, functions, threads = collections.Counter(), collections.Counter(), set()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            thread, *frames = stack.split(";")
            if not frames:  # a native thread py-spy lists with an empty stack: its time is the native share
                continue
            threads.add(int(thread.removeprefix("thread (").split(")")[0]))
            layer = layer_of(frames)
            if layer is None:
                continue
            layers[layer] += int(count)
            for name in {f.rsplit(":", 1)[0] + ")" for f in frames if "(cnnserve/" in f}:
                functions[name] += int(count)
    return layers, functions, threads


def thread_cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds of every thread of ``processes``, by thread id."""
    return {tid: seconds for p in processes for tid, seconds in thread_seconds(p).items()}


def profile_route(server, workers: list[psutil.Process], load, clients: int, seconds: float, stem: Path,
                  py_spy: str) -> dict:
    window = max(1, round(seconds))  # wrk and py-spy take whole seconds
    before = sum(thread_cpu_seconds(workers).values())
    plain = wrk(server.url, load, clients, window)
    cpu_us = 1e6 * (sum(thread_cpu_seconds(workers).values()) - before) / (plain["throughput_rps"] * window)
    result = {}
    loader = threading.Thread(target=lambda: result.update(wrk(server.url, load, clients, window + 2)))
    loader.start()
    time.sleep(1)
    before = thread_cpu_seconds(workers)
    paths = [stem.with_name(f"{stem.name}-worker{i}.collapsed") for i in range(len(workers))]
    spies = [
        subprocess.Popen([py_spy, "record", "--threads", "--format", "raw", "-r", str(SAMPLE_RATE), "-d", str(window),
                          "-o", str(path), "-p", str(worker.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for worker, path in zip(workers, paths)
    ]
    for spy in spies:
        _, error = spy.communicate()
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed (it needs ptrace: root or CAP_SYS_PTRACE): {error.decode()[-500:]}")
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in thread_cpu_seconds(workers).items()}
    loader.join()
    layers, functions, python_threads = read_collapsed(paths)
    total = sum(layers.values())
    python_us = cpu_us * sum(spent.get(t, 0.0) for t in python_threads) / max(sum(spent.values()), 1e-9)
    layers_us = {k: python_us * v / total for k, v in layers.items()}
    if cpu_us - python_us > 0.005 * cpu_us:
        layers_us[NATIVE] = cpu_us - python_us
    return {"throughput_rps": plain["throughput_rps"], "profiled_rps": result["throughput_rps"], "cpu_us": cpu_us,
            "layers_us": layers_us, "functions_us": {k: python_us * v / total for k, v in functions.most_common(12)},
            "samples": total}


def write_report(model: str, clients: int, profiles: dict, command: str, stem: Path) -> str:
    machine = describe_machine()
    layer_names = sorted({k for p in profiles.values() for k in p["layers_us"]},
                         key=lambda k: -max(p["layers_us"].get(k, 0) for p in profiles.values()))
    routes = list(profiles)
    lines = [
        f"# Where the time goes: {model}, {clients} clients ({datetime.date.today()})", "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; the wrk client shares them. Made by `{command}`.",
        "Microseconds of server CPU (all worker processes, from psutil) per request. The Python threads' share is",
        "split by py-spy samples, each counted for its innermost frame that belongs to a known layer; threads",
        "py-spy never saw in Python code (ONNX Runtime's own pool) are one row.", "",
        "| | " + " | ".join(routes) + " |", "|---|" + "---:|" * len(routes),
        "| requests/s (unprofiled) | " + " | ".join(f"{p['throughput_rps']:,.0f}" for p in profiles.values()) + " |",
        "| server CPU per request | " + " | ".join(f"**{p['cpu_us']:.0f} µs**" for p in profiles.values()) + " |",
    ]
    lines += [f"| {name} | " + " | ".join(f"{p['layers_us'].get(name, 0):.1f}" for p in profiles.values()) + " |"
              for name in layer_names]
    for route, p in profiles.items():
        lines += ["", f"cnnserve functions on `{route}` (inclusive µs per request, {p['samples']} samples):", ""]
        lines += [f"- {us:6.1f} µs  `{name}`" for name, us in p["functions_us"].items()]
    lines += ["", f"Raw stacks: `{stem.name}-<route>-worker<n>.collapsed`."]
    text = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"model": model, "clients": clients, "command": command,
                                                     "machine": machine, "routes": profiles}, indent=1))
    plot(profiles, layer_names, model, clients, stem.with_suffix(".png"))
    return text


def plot(profiles: dict, layer_names: list[str], model: str, clients: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * len(profiles)))
    routes = list(profiles)
    left = [0.0] * len(routes)
    colors = plt.get_cmap("tab20").colors
    for i, name in enumerate(layer_names):
        widths = [profiles[r]["layers_us"].get(name, 0) for r in routes]
        ax.barh(routes, widths, left=left, label=name, color=colors[i % len(colors)])
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("server CPU per request (µs)")
    ax.set_title(f"{model}, {clients} clients: where a request's CPU goes")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def require_py_spy() -> str:
    found = PY_SPY if PY_SPY.exists() else shutil.which("py-spy")
    if found is None:
        raise FileNotFoundError("py-spy is missing: pip install 'cnnserve[load]' (make setup-test installs it)")
    return str(found)


def profile_model(models_dir: Path, model_name: str, routes: list[str], clients: int, seconds: float, folder: Path,
                  command: str) -> Path:
    """Profile ``routes`` of one model on a fresh server; write the report into ``folder`` and return its stem."""
    py_spy = require_py_spy()
    model = discover(models_dir).resolve(model_name)
    loads = route_loads(model)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"profile-{model.name}-c{clients}"
    profiles = {}
    with tempfile.TemporaryDirectory() as tmp, running_server(
            Path(tmp), models_dir=str(models_dir.resolve()), target=NOOP_SERVICE, serve=model.name) as server:
        workers = psutil.Process(server.process.pid).children(recursive=True)
        for route in routes:
            wrk(server.url, loads[route], clients, 1)  # warm
            profiles[route] = profile_route(server, workers, loads[route], clients, seconds,
                                            stem.with_name(f"{stem.name}-{route}"), py_spy)
            print(f"{model.name} {route:<10} c={clients:<3} {profiles[route]['throughput_rps']:8,.0f} req/s, "
                  f"{profiles[route]['cpu_us']:7.1f} µs of server CPU per request", flush=True)
    write_report(model.name, clients, profiles, command, stem)
    return stem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--model", default="lenet5-digits")
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=["v2-binary", "noop-v2", "noop"])
    parser.add_argument("--clients", type=int, default=64, help="wrk connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="per window (two per route)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "loadtests" / "results")
    args = parser.parse_args()
    command = " ".join(["python -m loadtests.bench.profile", *sys.argv[1:]])
    try:
        stem = profile_model(args.models_dir, args.model, args.routes, args.clients, args.seconds,
                             args.out / datetime.date.today().isoformat(), command)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    print(stem.with_suffix(".md").read_text())
    print(f"wrote {stem}.md, .json and .png")


if __name__ == "__main__":
    main()
