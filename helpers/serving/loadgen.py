"""Load tests with wrk (a C load generator: one client thread here does tens of thousands of requests per second, so the
generator is not what is measured). Every run is bounded by time, against 127.0.0.1 only.

`by_status` is the other load test: a Python client that records every answer's status and latency, for an overload,
where the fast 503s and the slow 200s must be told apart (wrk reports one latency distribution for all answers).

wrk is a Debian/Ubuntu (`apt-get install wrk`) and Homebrew (`brew install wrk`) package; `make setup` installs it where
it can. `available()` says whether it is there; the notebook says what it skips without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from helpers.fixes import with_fix

# wrk's Lua hooks: send the same POST body with our headers (or each of several bodies in turn: WRK_LENGTHS_FILE lists
# their lengths, the body file holds them one after another); at the end print one JSON line with the numbers we need.
SCRIPT = r"""
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
for line in io.lines(os.getenv("WRK_HEADERS_FILE")) do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
if os.getenv("WRK_LENGTHS_FILE") then
  local requests, next_one = {}, 0
  for n in io.lines(os.getenv("WRK_LENGTHS_FILE")) do
    requests[#requests + 1] = wrk.format(nil, nil, nil, f:read(tonumber(n)))  -- built once, sent many times
  end
  request = function()
    next_one = next_one % #requests + 1
    return requests[next_one]
  end
else
  wrk.body = f:read("*all")
end
f:close()
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


def run(url: str, body: bytes | list[bytes], headers: dict[str, str], connections: int, seconds: float, threads: int = 1,
        timeout_s: float = 10.0) -> dict:
    """Requests per second, latency percentiles (ms) and error counts of `connections` concurrent clients POSTing
    `body` to `url` for `seconds`; with a list of bodies, each connection sends them in turn (varied traffic)."""
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("load tests here only target 127.0.0.1")
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError(with_fix("wrk is not installed", "wrk"))
    with tempfile.TemporaryDirectory() as tmp:
        script, body_file, headers_file = Path(tmp, "post.lua"), Path(tmp, "body"), Path(tmp, "headers")
        script.write_text(SCRIPT)
        bodies = body if isinstance(body, list) else [body]
        body_file.write_bytes(b"".join(bodies))
        headers_file.write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
        lengths = {}
        if isinstance(body, list):
            Path(tmp, "lengths").write_text("".join(f"{len(b)}\n" for b in bodies))
            lengths = {"WRK_LENGTHS_FILE": str(Path(tmp, "lengths"))}
        command = [wrk, f"-t{threads}", f"-c{max(connections, threads)}", f"-d{max(1, round(seconds))}s",
                   f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30,
                                env={**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_HEADERS_FILE": str(headers_file),
                                     **lengths})
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


def by_status(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float,
              timeout_s: float = 30.0, honor_retry_after: bool = True) -> dict:
    """`connections` clients POSTing `body` to `url` one request after another for `seconds` (a closed loop, as wrk):
    how many answers had each status, and the latency percentiles (ms) of the accepted (200) and of the shed (503)
    ones, with whether every 503 carried Retry-After. A client told to retry after N seconds waits them (unless
    `honor_retry_after=False`: clients hammering the server). Runs its own event loop in a thread, so it works from a notebook
    (whose loop is already running)."""
    if httpx.URL(url).host not in ("127.0.0.1", "localhost"):
        raise ValueError("load tests here only target 127.0.0.1")
    with ThreadPoolExecutor(1) as thread:
        answers = thread.submit(asyncio.run, closed_loop(url, body, headers, connections, seconds, timeout_s,
                                                                honor_retry_after)).result()
    return summarize(answers, connections, seconds)


async def closed_loop(url, body, headers, connections, seconds, timeout_s,
                      honor_retry_after) -> list[tuple[int, float, bool]]:
    """(status, seconds, has Retry-After) of every answer; 0 for a request that failed without one (timeout, reset).
    HTTP/1.1 over keep-alive connections, written out: httpx's connection pool costs more per request than this server
    at a hundred connections, and would measure itself."""
    target = httpx.URL(url)
    request = (f"POST {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
               f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())).encode() + b"\r\n" + body
    answers, deadline = [], time.perf_counter() + seconds

    async def one_client():
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    writer.write(request)
                    status, retry_after = await asyncio.wait_for(read_answer(reader), timeout_s)
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    answers.append((0, time.perf_counter() - started, False))
                    return
                answers.append((status, time.perf_counter() - started, retry_after is not None))
                if retry_after is not None and honor_retry_after:  # a well-behaved client comes back when told to
                    await asyncio.sleep(max(0.0, min(retry_after, deadline - time.perf_counter())))
        finally:
            writer.close()

    await asyncio.gather(*(one_client() for _ in range(connections)))
    return answers


def paced(url: str, bodies: list[bytes], headers: dict[str, str], rate_per_s: float, seconds: float,
          connections: int = 8, timeout_s: float = 10.0) -> dict:
    """An open loop: request i is due at i / rate_per_s, whether or not earlier ones were answered (as users arrive),
    sent on the first free one of `connections` keep-alive connections; its latency counts from when it was due, so
    a server that falls behind shows it (wrk's closed loop waits for each answer, and hides the wait). The latency
    percentiles (ms) of the answers, and how many were not 200. Use a rate the server can sustain: this measures how
    fast it answers at that load, not its capacity."""
    if httpx.URL(url).host not in ("127.0.0.1", "localhost"):
        raise ValueError("load tests here only target 127.0.0.1")
    with ThreadPoolExecutor(1) as thread:
        answers = thread.submit(asyncio.run, open_loop(url, bodies, headers, rate_per_s, seconds, connections,
                                                       timeout_s)).result()
    latency_ms = np.array([a[1] for a in answers]) * 1000
    return {"rate_per_s": rate_per_s, "requests": len(answers), "not_200": sum(a[0] != 200 for a in answers),
            **{f"p{q}_ms": float(np.percentile(latency_ms, q)) for q in (50, 90, 99)}}


async def open_loop(url, bodies, headers, rate_per_s, seconds, connections, timeout_s) -> list[tuple[int, float]]:
    target = httpx.URL(url)
    head = (f"POST {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()))
    requests = [(head + f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    free: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(await asyncio.open_connection(target.host, target.port))
    answers, pending, start = [], [], time.perf_counter()

    async def one(i: int, due: float):
        reader, writer = await free.get()
        try:
            writer.write(requests[i % len(requests)])
            status, _ = await asyncio.wait_for(read_answer(reader), timeout_s)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            status = 0
            reader, writer = await asyncio.open_connection(target.host, target.port)
        answers.append((status, time.perf_counter() - due))
        free.put_nowait((reader, writer))

    for i in range(int(rate_per_s * seconds)):
        due = start + i / rate_per_s
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        pending.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*pending)
    while not free.empty():
        free.get_nowait()[1].close()
    return answers


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, float | None]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    await reader.readexactly(int(fields.get("content-length", 0)))
    retry_after = fields.get("retry-after")
    return int(head[0].split()[1]), None if retry_after is None else float(retry_after)


def summarize(answers: list[tuple[int, float, bool]], connections: int, seconds: float) -> dict:
    status = np.array([a[0] for a in answers])
    latency_ms = np.array([a[1] for a in answers]) * 1000

    def percentile(mask, q):
        return float(np.percentile(latency_ms[mask], q)) if mask.any() else float("nan")

    ok, shed = status == 200, status == 503
    return {"connections": connections, "requests": len(answers), "accepted_per_s": ok.sum() / seconds,
            "shed_share": shed.mean() if len(answers) else float("nan"),
            "accepted_p50_ms": percentile(ok, 50), "accepted_p99_ms": percentile(ok, 99),
            "shed_p99_ms": percentile(shed, 99), "shed_with_retry_after": all(a[2] for a in answers if a[0] == 503),
            "other": int((~ok & ~shed).sum())}
