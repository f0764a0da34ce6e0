"""LeNet-5's two bench target rows (÷ V2 no-op via wrk, ÷ FastAPI via perf_analyzer) for several models dirs,
servers up side by side, measured in alternated passes."""
import sys, tempfile, statistics
from pathlib import Path
from cnnserve.serving.repository import discover
from loadtests.local_server import running_server
from loadtests.bench.noop_routes import NOOP_SERVICE
from loadtests.bench.served import measure, route_loads, running_baseline, baseline_measure
from loadtests.bench.wrk import wrk

def main():
    dirs = [Path(d) for d in sys.argv[1:]]
    seconds = 4.0
    tmp = Path(tempfile.mkdtemp())
    from contextlib import ExitStack
    with ExitStack() as stack:
        sides = []
        for d in dirs:
            lenet = next(v for v in discover(d).versions() if v.name == "lenet5-digits")
            server = stack.enter_context(running_server(tmp, models_dir=str(d.resolve()), target=NOOP_SERVICE,
                                                        serve="lenet5-digits"))
            fastapi = stack.enter_context(running_baseline(lenet.file_for("fp32")[0], 2, 1, tmp))
            sides.append((d, lenet, server, fastapi))
        results = {str(d): {"infer": [], "noop": [], "v2": [], "fastapi": []} for d in dirs}
        for rnd in range(4):
            for d, lenet, server, fastapi in sides:
                loads = route_loads(lenet)
                r = results[str(d)]
                r["infer"].append(wrk(server.url, loads["v2-binary"], 64, seconds)["throughput_rps"])
                r["noop"].append(wrk(server.url, loads["noop-v2"], 64, seconds)["throughput_rps"])
                r["v2"].append(measure(server, lenet.name, [1, *lenet.input_shape], "v2-http", 64, seconds)["throughput_rps"])
                r["fastapi"].append(baseline_measure(fastapi, lenet.name, 64, seconds)["throughput_rps"])
                print(d, lenet.version, {k: round(v[-1]) for k, v in r.items()},
                      "÷noop %.2f ÷fastapi %.2f" % (r["infer"][-1] / r["noop"][-1], r["v2"][-1] / r["fastapi"][-1]), flush=True)
        for d, r in results.items():
            a = statistics.median(i / n for i, n in zip(r["infer"], r["noop"]))
            b = statistics.median(i / n for i, n in zip(r["v2"], r["fastapi"]))
            print(f"{d}: infer÷noop median {a:.3f}  v2÷fastapi median {b:.3f}")

if __name__ == "__main__":
    main()
