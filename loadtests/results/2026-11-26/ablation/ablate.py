"""Ablation of the batcher's scheduling heuristics: each variant is a worktree with one heuristic switched off.

python ablate.py OUT.jsonl ROUNDS SECONDS VARIANT... : rows printed as they come and appended to OUT.jsonl.
An experiment record, run from a checkout at /work/main (the worktrees are made from its HEAD).
"""
import json, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "/work/main")
from loadtests.local_server import running_server
from loadtests.bench.perf_analyzer import perf_analyzer
from loadtests.bench.grpc_channel import one_channel
from loadtests.predict_bench import batch_totals

SWITCHES = {  # variant -> (file, old, new)
    "base": [],
    "no-inline": [("cnnserve/serving/batcher.py", "INLINE_BELOW_S = 2e-3", "INLINE_BELOW_S = 0.0")],
    "no-lone": [("cnnserve/serving/host.py", "alone=lone_http_request,", "alone=None,")],
    "no-borrow": [("cnnserve/serving/config.py", "borrow_idle_cores: bool = True", "borrow_idle_cores: bool = False")],
    "regather-0.3": [("cnnserve/serving/batcher.py", "REGATHER_FRACTION = 0.1", "REGATHER_FRACTION = 0.3")],
    "no-regather": [("cnnserve/serving/batcher.py", "REGATHER_FRACTION = 0.1", "REGATHER_FRACTION = 0.0")],
    "no-extra-pass": [("cnnserve/serving/batcher.py",
                       "            if self.queued_images < self.last_batch_images:\n                await asyncio.sleep(0)",
                       "            if False:\n                await asyncio.sleep(0)")],
}

def worktree(variant):
    path = Path(f"/tmp/abl/{variant}")
    if not path.exists():
        subprocess.run(["git", "-C", "/work/main", "worktree", "add", "--detach", str(path), "HEAD"], check=True,
                       capture_output=True)
        for file, old, new in SWITCHES[variant]:
            target = path / file
            text = target.read_text()
            assert text.count(old) == 1, (variant, old)
            target.write_text(text.replace(old, new))
    return path

def mean_batch(server, model, before):
    total, count = batch_totals(server.metrics(), model)
    return (total - before[0]) / max(count - before[1], 1)

MODELS = Path("/tmp/abl-models")
if not MODELS.exists():
    MODELS.mkdir()
    for m in ("lenet5-digits", "resnet18-digits"):
        (MODELS / m).symlink_to(f"/work/main/models/{m}")

out, rounds, seconds, variants = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
for r in range(rounds):
    for variant in variants:
        path = worktree(variant)
        with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), cwd=path, models_dir=str(MODELS)) as server:
            host = server.url.removeprefix("http://")
            cases = [
                ("lenet5-digits", "http", 64), ("lenet5-digits", "http", 1), ("lenet5-digits", "grpc", 64),
                ("resnet18-digits", "http", 64), ("resnet18-digits", "http", 1), ("resnet18-digits", "grpc", 64),
                ("resnet18-digits", "one-channel", 64),
            ]
            for model, protocol, clients in cases:
                before = batch_totals(server.metrics(), model)
                if protocol == "one-channel":
                    res = one_channel(model, server.grpc_address, [1, 3, 64, 64], clients, seconds * 2)
                else:
                    res = perf_analyzer(model, server.grpc_address if protocol == "grpc" else host, protocol, clients, seconds)
                row = dict(round=r, variant=variant, model=model, protocol=protocol, clients=clients,
                           rps=round(res["throughput_rps"], 1), p50_ms=round(res["p50_ms"], 3),
                           batch=round(mean_batch(server, model, before), 2), t=time.time())
                print(json.dumps(row), flush=True)
                with open(out, "a") as f:
                    f.write(json.dumps(row) + "\n")
