"""Served throughput and latency over the V2 protocols, measured by NVIDIA's
perf_analyzer (C++, so the client takes little of the cores the server needs)."""

from __future__ import annotations

import csv
import subprocess
import tempfile
from pathlib import Path

from ..triton_tools import PERF_ANALYZER, perf_analyzer_env, require


def perf_analyzer(model: str, address: str, protocol: str, concurrency: int, seconds: float) -> dict:
    """One concurrency level; ``protocol`` is ``http`` (binary tensors) or ``grpc``.

    Three time windows of ``seconds`` each, averaged: perf_analyzer's stability
    check is relaxed (the windows are taken as they come) so a run is bounded.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.csv"
        command = [
            str(require(PERF_ANALYZER)), "-m", model, "-u", address, "-i", protocol,
            "--input-data", "zero", "--concurrency-range", str(concurrency),
            "--measurement-mode", "time_windows", "--measurement-interval", str(int(seconds * 1000)),
            "--stability-percentage", "1000", "--max-trials", "3", "-f", str(report),
        ]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, env=perf_analyzer_env())
        if result.returncode != 0 or not report.exists():
            raise RuntimeError(f"perf_analyzer failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        with report.open() as f:
            row = next(csv.DictReader(f))
    return {
        "throughput_rps": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
        "errors": 0,
    }
