"""Start an HTTP server process from a notebook or a test, wait until it answers, and always stop it.

`running_server(repository, ...)` starts `python -m helpers.serving` on a free 127.0.0.1 port and yields a handle with
its URL; leaving the `with` block (normally, on an error, or on a notebook interrupt) terminates the process group, so
no orphan keeps a port. Output goes to `artifacts/logs/<name>-<port>.log`; if the process dies while starting, the
error quotes the end of that log. Readiness is polled, never assumed after a fixed sleep.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers import paths
from helpers.fixes import with_fix


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int
    log: Path
    api_key: str | None = None


# `make demo`'s address, the same for a whole class; COURSE_DEMO_PORT (or `make demo PORT=...`) moves it
DEMO_PORT = int(os.environ.get("COURSE_DEMO_PORT", "8500"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR, as servers set it: a port that only has connections
    closing (TIME_WAIT) from an earlier run is free; a port something listens on is not."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(with_fix(f"the server exited with code {process.returncode} while starting; end of {log}:\n"
                                         + log.read_text()[-3000:], "not-ready"))
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(with_fix(f"{url} did not answer 200 within {timeout_s} s; see {log}", "not-ready"))


def stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)  # the whole group: the server and anything it started
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:  # it exited between poll() and the signal
        process.wait()


@contextmanager
def running(command: list[str], ready_path: str, name: str, port: int, env: dict | None = None, timeout_s: float = 120.0):
    """Run `command` (which must listen on 127.0.0.1:`port`) until the block ends; yields (url, process, log)."""
    log = paths.artifacts() / "logs" / f"{name}-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})}, cwd=paths.ROOT)
    stop_this = functools.partial(stop, process)
    atexit.register(stop_this)  # also when the kernel shuts down with the block still open (a cell left it open)
    try:
        wait_until_ready(url + ready_path, process, log, timeout_s)
        yield url, process, log
    finally:
        stop_this()
        atexit.unregister(stop_this)


@contextmanager
def running_server(repository: Path, batching: bool = False, api_key: str | None = None, name: str = "server",
                   demo: bool = False, port: int | None = None, **options):
    """The course's inference server on a free port (or `port`). `options` are its command-line flags, e.g.
    batch_max_delay_ms=2; `demo=True` also serves the browser demo under /demo/."""
    port = port or free_port()
    command = [sys.executable, "-m", "helpers.serving", "--repository", str(Path(repository).resolve()), "--port", str(port)]
    command += ["--batching"] if batching else []
    command += ["--demo"] if demo else []
    for flag, value in options.items():
        command += [f"--{flag.replace('_', '-')}", str(value)]
    env = {"COURSE_SERVING_API_KEY": api_key or ""}
    with running(command, "/v2/health/ready", name, port, env) as (url, process, log):
        yield RunningServer(url, process.pid, log, api_key)
