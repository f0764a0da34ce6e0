"""The run's lifecycle in Locust's events: options, preparing the workload
when a test starts, the request-count bound, and the verdict when Locust quits.

The verdict sets ``environment.process_exit_code`` (0 pass, 1 a threshold or
check failed, 2 the run could not start), which Locust uses as its exit code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import gevent
from locust import events
from locust.exception import StopTest
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry

from . import options as cli
from .summary import Row, Summary, judge
from .target import SetupError, discover
from .workload import Workload, build_workload

log = logging.getLogger("cnnserve.loadtest")
TOP_ERRORS = 10


@dataclass
class RunState:
    """What this process's users share: the workload, or why there is none."""

    workload: Workload | None = None
    setup_error: str | None = None
    started: bool = False
    requests: int = 0


current = RunState()


@events.init_command_line_parser.add_listener
def add_options(parser, **_) -> None:
    cli.add_options(parser)


def end_run(environment, reason: str) -> None:
    """Stop the load the way ``--run-time`` does: quit when headless, stop in the web UI."""
    log.info("%s, stopping", reason)
    headless = environment.parsed_options is not None and environment.parsed_options.headless
    gevent.spawn(environment.runner.quit if headless else environment.runner.stop)


@events.init.add_listener
def bound_requests(environment, **_) -> None:
    limit = environment.parsed_options.max_requests if environment.parsed_options else 0
    if not limit:
        return

    def count(**_) -> None:
        current.requests += 1
        if current.requests == limit:
            end_run(environment, f"--max-requests {limit} reached")

    environment.events.request.add_listener(count)


@events.test_start.add_listener
def prepare(environment, **_) -> None:
    """Find the model and build every request before the first user runs."""
    # --tags / --exclude-tags leave a class they exclude without tasks, and such a class cannot run.
    environment.user_classes[:] = [cls for cls in environment.user_classes if cls.tasks]
    current.started, current.requests = True, 0
    if isinstance(environment.runner, MasterRunner):
        return  # the workers send the requests
    options = environment.parsed_options
    try:
        if not environment.host:
            raise SetupError("no host: pass --host http://127.0.0.1:3000 (or set it in the web UI)")
        target = replace(discover(environment.host, options.model, options.api_key), later_versions=options.rolling)
        current.workload = build_workload(target, options.files_per_batch, options.tensor_batch)
        current.setup_error = None
        environment.stats.reset_all()  # so req/s counts from the first request, not from before the preparation
        log.info("testing %s version %s, input %dx%dx%d", target.name, target.version,
                 target.channels, target.height, target.width)
    except SetupError as exc:
        current.workload, current.setup_error = None, str(exc)
        # Locust logs it and stops (quits when headless) before any user is spawned.
        raise StopTest(f"cannot start: {exc}") from None


def row(entry: StatsEntry) -> Row:
    return Row(
        type=entry.method or "",
        name=entry.name,
        requests=entry.num_requests,
        failures=entry.num_failures,
        p50_ms=entry.get_response_time_percentile(0.50),
        p95_ms=entry.get_response_time_percentile(0.95),
        p99_ms=entry.get_response_time_percentile(0.99),
        rps=round(entry.total_rps, 2),
    )


def top_errors(stats) -> list[dict]:
    errors = sorted(stats.errors.values(), key=lambda e: -e.occurrences)[:TOP_ERRORS]
    return [
        {
            "type": e.method,
            "name": e.name,
            "error": e.to_name().removeprefix(f"{e.method} {e.name}: ")[:300],
            "occurrences": e.occurrences,
        }
        for e in errors
    ]


def run_meta(environment) -> dict:
    options, target = environment.parsed_options, current.workload.target if current.workload else None
    stats = environment.stats.total
    load = f"stages {options.stages}" if options.stages != cli.NO_STAGES else f"{options.num_users} users"
    return {
        "host": environment.host,
        "model": f"{target.name}/{target.version}" if target else options.model,
        "scenarios": sorted(cls.__name__ for cls in environment.user_classes),
        "load": load,
        "duration_s": round((stats.last_request_timestamp or stats.start_time) - stats.start_time, 1),
    }


@events.quitting.add_listener
def conclude(environment, **_) -> None:
    """Judge the run from Locust's own statistics and set the exit code."""
    if isinstance(environment.runner, WorkerRunner) or not current.started:
        return
    options = environment.parsed_options
    expected = [(cls.request_type, cls.request_name) for cls in environment.user_classes]
    stats = environment.stats
    rows = [row(e) for e in sorted(stats.entries.values(), key=lambda e: (e.method or "", e.name))]
    summary = Summary(
        meta=run_meta(environment),
        rows=rows,
        total=row(stats.total),
        checks=judge(rows, expected, options.max_failure_ratio, options.max_p95_ms, current.setup_error),
        errors=top_errors(stats),
    )
    for check in summary.checks:
        log.info("%s %s (limit %s): %s", "PASS" if check.passed else "FAIL", check.name, check.limit, check.reason)
    if options.summary:
        summary.write(Path(options.summary))
    environment.process_exit_code = summary.exit_code
