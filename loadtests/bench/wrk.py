"""HTTP load from wrk (C, one thread): ``/predict`` with image files, and the
no-op comparison. Each request body is prepared once; a Lua script rotates
through them and reports the figures as JSON when the run ends."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LUA = """
local bodies = {}
local count = %(count)d
for i = 1, count do
  local f = io.open("%(dir)s/" .. i .. ".body", "rb")
  bodies[i] = f:read("*all")
  f:close()
end
local content_type = "%(content_type)s"
local n = 0
request = function()
  n = n %% count + 1
  local headers = {["Content-Type"] = content_type%(headers)s}
  return wrk.format("%(method)s", "%(path)s", headers, bodies[n])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout
  io.write("WRK_JSON " .. string.format(
    '{"requests": %%d, "errors": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, errors, summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class HttpLoad:
    """What wrk sends: one method and path, a rotation of bodies, their content type and extra headers."""

    method: str
    path: str
    bodies: list[bytes]
    content_type: str = "application/octet-stream"
    headers: dict[str, str] | None = None


def multipart(field: str, data: bytes, filename: str, boundary: str = "cnnservebenchboundary") -> tuple[bytes, str]:
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise FileNotFoundError("wrk is missing: `apt-get install wrk` (make bench installs it)")
    return path


def wrk(url: str, load: HttpLoad, concurrency: int, seconds: float, threads: int = 1) -> dict:
    """Throughput and latency of ``load`` from ``concurrency`` keep-alive connections for ``seconds`` (whole, at
    least 1), on up to ``threads`` threads: the most that divide ``concurrency``, since wrk gives each thread
    ``connections // threads`` and would open fewer than asked otherwise."""
    threads = max(t for t in range(1, min(threads, concurrency) + 1) if concurrency % t == 0)
    with tempfile.TemporaryDirectory() as tmp:
        for i, body in enumerate(load.bodies, start=1):
            Path(tmp, f"{i}.body").write_bytes(body)
        headers = "".join(f', ["{k}"] = "{v}"' for k, v in (load.headers or {}).items())
        script = Path(tmp, "load.lua")
        script.write_text(LUA % {"count": len(load.bodies), "dir": tmp, "content_type": load.content_type,
                                 "headers": headers, "method": load.method, "path": load.path})
        before, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
        command = [require_wrk(), f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(script), url]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=seconds + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    figures = json.loads(line.removeprefix("WRK_JSON "))
    # wrk's CPU, and that of any other child this process reaped meanwhile (none, where the figure is used)
    spent = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "client_cpu_ms_per_request": 1000 * spent / figures["requests"] if figures["requests"] else None,
        "throughput_rps": figures["requests"] / figures["seconds"],
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "errors": figures["errors"],
        "window": [began, began + figures["seconds"]],  # wall-clock seconds of the load (from wrk's start)
    }
