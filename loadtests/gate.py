"""One-command load gate: run the Locust scenarios headless against a cnnserve,
keep the evidence, and pass or fail on the failure ratio and p95 latency.

    python -m loadtests.gate --host http://127.0.0.1:3000 --grpc 127.0.0.1:3001 \\
        --model resnet18-digits --users 8 --run-time 20s --scenario predict,v2-binary,grpc \\
        --max-failure-ratio 0.01 --max-p95-ms 500 --out loadtests/results/gate-ci

Writes OUT/locust_*.csv, OUT/report.html, OUT/summary.{md,json} and
OUT/locust.log, prints the summary and exits 0 (pass), 1 (a threshold
failed, or a scenario sent nothing) or 2 (the run could not happen). Arguments
after ``--`` go to Locust unchanged. Locust runs in its own process: it
monkey-patches the standard library with gevent, which the caller (a CI job,
pytest) should not inherit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .scenarios.catalog import SCENARIOS, scenarios_named
from .scenarios.stages import STAGES, peak_users, total_seconds
from .scenarios.summary import SETUP_FAILED

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_RUN_TIME = "20s"
SHUTDOWN_SLACK_SECONDS = 120  # preparing the workload, stopping users, writing reports


def parse_seconds(text: str) -> float:
    """Locust's time spans: ``90``, ``20s``, ``3m``, ``1h30m``."""
    total, number = 0.0, ""
    for char in text.strip():
        if char.isdigit() or char == ".":
            number += char
        elif char in "hms" and number:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
        else:
            raise argparse.ArgumentTypeError(f"not a time span: {text!r} (e.g. 20s, 3m, 1h30m)")
    return total + (float(number) if number else 0.0)


def time_span(text: str) -> str:
    """An argparse type: a valid time span, kept as written for Locust."""
    parse_seconds(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.gate", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="http://127.0.0.1:3000", help="cnnserve's HTTP address")
    parser.add_argument("--grpc", default="127.0.0.1:3001", help="cnnserve's gRPC address (host:port)")
    parser.add_argument("--model", default="resnet18-digits")
    parser.add_argument("--scenario", default="all", help="comma-separated, or all: " + "; ".join(
        f"{s.name} ({s.summary})" for s in SCENARIOS.values()))
    parser.add_argument("--users", type=int, default=8, help="concurrent users, spread over the scenarios")
    parser.add_argument("--spawn-rate", type=float, default=None,
                        help="users started per second (default: all at once)")
    parser.add_argument("--run-time", type=time_span, default=None,
                        help=f"e.g. 20s, 3m (default {DEFAULT_RUN_TIME}; with --stages: the table's length)")
    parser.add_argument("--max-requests", type=int, default=0, help="also stop after this many requests (0: no limit)")
    parser.add_argument("--stages", choices=list(STAGES), default=None, help="a stage table instead of --users")
    parser.add_argument("--tensor-batch", type=int, default=1, help="images per V2 / gRPC request")
    parser.add_argument("--files-per-batch", type=int, default=4, help="files per POST /predict_batch")
    parser.add_argument("--rolling", action="store_true",
                        help="a rollout runs meanwhile: answers from a later version of the model count as right")
    parser.add_argument("--max-failure-ratio", type=float, default=0.01, help="per request name")
    parser.add_argument("--max-p95-ms", type=float, default=None, help="per request name (default: not checked)")
    parser.add_argument("--out", type=Path, default=None, help="default: loadtests/results/gate-<timestamp>")
    return parser


def locust_command(args, out: Path, locust_args: list[str]) -> list[str]:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", args.host, "--grpc-host", args.grpc, "--model", args.model,
        "--files-per-batch", str(args.files_per_batch), "--tensor-batch", str(args.tensor_batch),
        "--csv", str(out / "locust"), "--html", str(out / "report.html"), "--summary", str(out / "summary"),
        "--max-failure-ratio", str(args.max_failure_ratio),
    ]
    if args.max_p95_ms is not None:
        command += ["--max-p95-ms", str(args.max_p95_ms)]
    if args.stages:
        command += ["--stages", args.stages]
    else:
        command += ["--users", str(args.users), "--spawn-rate", str(args.spawn_rate or args.users)]
    if args.run_time:
        command += ["--run-time", args.run_time]
    if args.max_requests:
        command += ["--max-requests", str(args.max_requests)]
    if args.rolling:
        command += ["--rolling"]
    return command + locust_args + [s.user_class for s in args.scenarios]


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Refuse a run that could not pass: bad names, or fewer users than scenarios."""
    try:
        args.scenarios = scenarios_named(args.scenario)
    except ValueError as exc:
        parser.error(str(exc))
    users = peak_users(STAGES[args.stages]) if args.stages else args.users
    if users < len(args.scenarios):
        parser.error(f"{users} user(s) cannot run {len(args.scenarios)} scenarios: every scenario needs a user")
    if not args.stages and not args.run_time:
        args.run_time = DEFAULT_RUN_TIME


def run_gate(argv: list[str]) -> int:
    gate_argv, locust_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = build_parser()
    args = parser.parse_args(gate_argv)
    check_arguments(parser, args)
    # Absolute, because Locust runs in the project's folder, not necessarily the caller's.
    out = (args.out or REPO_ROOT / "loadtests" / "results" / f"gate-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = locust_command(args, out, locust_args)
    bounds = [parse_seconds(args.run_time) if args.run_time else None,
              total_seconds(STAGES[args.stages]) if args.stages else None]
    bound = min(b for b in bounds if b is not None)
    log_path, summary = out / "locust.log", out / "summary.json"
    summary.unlink(missing_ok=True)  # an earlier run's summary in the same folder must not pass for this one's
    print(f"running: {' '.join(command)}\nLocust's output: {log_path}", file=sys.stderr, flush=True)
    with log_path.open("w") as log:
        try:
            returncode = subprocess.run(command, check=False, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=bound + SHUTDOWN_SLACK_SECONDS).returncode
        except subprocess.TimeoutExpired:
            print(f"Locust did not finish within {bound + SHUTDOWN_SLACK_SECONDS:.0f} s", file=sys.stderr)
            return SETUP_FAILED
    if not summary.exists():
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        print(f"Locust exited with {returncode} and wrote no summary; the end of its log:", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
        return SETUP_FAILED
    print((out / "summary.md").read_text())
    print(f"evidence: {out}")
    return max(returncode, json.loads(summary.read_text())["exit_code"])


def main() -> None:
    sys.exit(run_gate(sys.argv[1:]))


if __name__ == "__main__":
    main()
