"""Load tests with wrk (a C load generator: one client thread here does tens of thousands of requests per second, so the
generator is not what is measured). Every run is bounded by time, against 127.0.0.1 only.

wrk is a Debian/Ubuntu (`apt-get install wrk`) and Homebrew (`brew install wrk`) package; `make setup` installs it where
it can. `available()` says whether it is there; the notebook says what it skips without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from helpers.fixes import with_fix

# wrk's Lua hooks: send the same POST body with our headers; at the end print one JSON line with the numbers we need.
SCRIPT = r"""
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
for line in io.lines(os.getenv("WRK_HEADERS_FILE")) do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "non_2xx": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float, threads: int = 1,
        timeout_s: float = 10.0) -> dict:
    """Requests per second, latency percentiles (ms) and error counts of `connections` concurrent clients POSTing
    `body` to `url` for `seconds`."""
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("load tests here only target 127.0.0.1")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError(with_fix("wrk is not installed", "wrk"))
    with tempfile.TemporaryDirectory() as tmp:
        script, body_file, headers_file = Path(tmp, "post.lua"), Path(tmp, "body"), Path(tmp, "headers")
        script.write_text(SCRIPT)
        body_file.write_bytes(body)
        headers_file.write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
        command = [wrk, f"-t{threads}", f"-c{max(connections, threads)}", f"-d{max(1, round(seconds))}s",
                   f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30,
                                env={**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_HEADERS_FILE": str(headers_file)})
    line = next((out for out in result.stdout.splitlines() if out.startswith("WRK_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {result.returncode}): {result.stderr[-1000:] or result.stdout[-1000:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return {"connections": connections, "requests": raw["requests"], "requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50_ms": raw["p50_us"] / 1000, "p95_ms": raw["p95_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "errors": errors, "non_2xx": raw["non_2xx"]}


def sweep(label: str, url: str, body: bytes, headers: dict[str, str], concurrencies, seconds: float) -> list[dict]:
    """One `run` per concurrency level, each row labelled: the rows of the chapter's load-test table."""
    return [{"server": label, **run(url, body, headers, c, seconds)} for c in concurrencies]
