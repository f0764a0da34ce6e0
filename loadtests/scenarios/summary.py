"""The verdict of a run: per request name, the counts and latencies, each
threshold passed or failed with its reason, and the exit code.

Plain data in, plain data out, so Locust's ``quitting`` listener builds it
from ``environment.stats`` and the gate and tests read the JSON it writes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASSED, FAILED, SETUP_FAILED = 0, 1, 2  # exit codes


@dataclass
class Row:
    type: str
    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def label(self) -> str:
        return f"{self.type} {self.name}".strip()


@dataclass
class Check:
    name: str
    limit: float | str
    passed: bool
    reason: str


@dataclass
class Summary:
    meta: dict
    rows: list[Row]
    total: Row
    checks: list[Check]
    errors: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(c.name == "setup" and not c.passed for c in self.checks):
            return SETUP_FAILED
        return PASSED if all(c.passed for c in self.checks) else FAILED

    def to_json(self) -> dict:
        def row(r: Row) -> dict:
            return {**asdict(r), "failure_ratio": round(r.failure_ratio, 6)}

        return {
            **self.meta,
            "passed": self.exit_code == PASSED,
            "exit_code": self.exit_code,
            "requests": [row(r) for r in self.rows],
            "total": row(self.total),
            "checks": [asdict(c) for c in self.checks],
            "errors": self.errors,
        }

    def to_markdown(self) -> str:
        verdict = "PASS" if self.exit_code == PASSED else "FAIL"
        lines = [
            f"# Load gate: {verdict}",
            "",
            ", ".join(f"{k}: {v}" for k, v in self.meta.items()),
            "",
            "| request | requests | failures | failure ratio | p50 ms | p95 ms | p99 ms | req/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in [*self.rows, self.total]:
            lines.append(
                f"| {r.label} | {r.requests} | {r.failures} | {r.failure_ratio:.4f} | {r.p50_ms:g} | "
                f"{r.p95_ms:g} | {r.p99_ms:g} | {r.rps:.1f} |"
            )
        lines += ["", "| check | limit | result | reason |", "|---|---|---|---|"]
        lines += [f"| {c.name} | {c.limit} | {'PASS' if c.passed else 'FAIL'} | {c.reason} |" for c in self.checks]
        if self.errors:
            lines += ["", "Most frequent failures:", ""]
            lines += [f"- {e['occurrences']}x {e['type']} {e['name']}: {e['error']}" for e in self.errors]
        return "\n".join(lines) + "\n"

    def write(self, prefix: Path) -> None:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{prefix}.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        Path(f"{prefix}.md").write_text(self.to_markdown())


def judge(
    rows: list[Row],
    expected: list[tuple[str, str]],
    max_failure_ratio: float | None,
    max_p95_ms: float | None,
    setup_error: str | None = None,
) -> list[Check]:
    """One check per threshold, each over every request name: the worst one decides.

    ``expected`` holds the (type, name) every selected scenario sends; one that
    sent nothing fails the run, since silence would otherwise pass every threshold.
    """
    if setup_error:
        return [Check("setup", "model served and discoverable", False, setup_error)]
    sent = {(r.type, r.name) for r in rows if r.requests}
    silent = [f"{t} {n}" for t, n in expected if (t, n) not in sent]
    checks = [
        Check(
            "every scenario sent requests",
            "> 0 each",
            not silent and bool(expected),
            f"none from {', '.join(silent)}" if silent else f"{len(expected)} scenario(s) sent requests",
        )
    ]
    if max_failure_ratio is not None:
        checks.append(threshold("max failure ratio", max_failure_ratio, rows, lambda r: r.failure_ratio, "{:.4f}"))
    if max_p95_ms is not None:
        checks.append(threshold("max p95 ms", max_p95_ms, rows, lambda r: r.p95_ms, "{:g} ms"))
    return checks


def threshold(name: str, limit: float, rows: list[Row], measure, form: str) -> Check:
    measured = [r for r in rows if r.requests]
    over = [f"{r.label} {form.format(measure(r))}" for r in measured if measure(r) > limit]
    if over:
        return Check(name, limit, False, f"over the limit: {'; '.join(over)}")
    if not measured:
        return Check(name, limit, False, "no requests to measure")
    worst = max(measured, key=measure)
    return Check(name, limit, True, f"worst: {worst.label} {form.format(measure(worst))}")
