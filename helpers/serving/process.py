"""Start an HTTP server process from a notebook or a test, wait until it answers, and always stop it.

`running_server(repository, ...)` starts `python -m helpers.serving` on a free 127.0.0.1 port and yields a handle with
its URL; leaving the `with` block (normally, on an error, or on a notebook interrupt) stops the process and everything
under it, so no orphan keeps a port. Output goes to `artifacts/logs/<name>-<port>.log`; if the process dies while
starting, the error quotes the end of that log. Readiness is polled, never assumed after a fixed sleep.

With `tls=helpers.tls.self_signed_certificate(folder)` the server speaks HTTPS: its url is https://127.0.0.1:<port>, its
readiness is polled with the certificate verified against the CA, and `RunningServer.verify` is what a client passes
to trust it (`ServingClient(server.url, verify=server.verify)`, `httpx.Client(verify=server.verify)`).

Starting and stopping are `helpers.processes`' (`running`, `stop`, `free_port`, `port_free` are re-exported here, where
the notebooks import them from); this module only knows the course server's command line.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.processes import free_port, port_free, running, stop
from helpers.tls import Certificates

__all__ = ["DEMO_PORT", "RunningServer", "free_port", "port_free", "running", "running_server", "stop"]


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int
    log: Path
    api_key: str | None = None
    tls: Certificates | None = None  # over HTTPS: the certificates it serves, and the CA clients trust

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client passes as httpx's `verify` to trust this server: a context trusting its CA (HTTPS), or True."""
        return True if self.tls is None else client_context(self.tls)


def client_context(tls: Certificates) -> ssl.SSLContext:
    """Python's default client context (certificate and host name checked), trusting `tls.ca` only."""
    return ssl.create_default_context(cafile=str(tls.ca))


# `make demo`'s address, the same for a whole class; COURSE_DEMO_PORT (or `make demo PORT=...`) moves it
DEMO_PORT = int(os.environ.get("COURSE_DEMO_PORT", "8500"))


@contextmanager
def running_server(repository: Path, batching: bool = False, api_key: str | None = None, name: str = "server",
                   demo: bool = False, port: int | None = None, host: str = "127.0.0.1", tls: Certificates | None = None,
                   **options):
    """The course's inference server on a free port (or `port`) of 127.0.0.1 (or `host`: any other address needs
    `api_key`). `options` are its command-line flags, e.g. batch_max_delay_ms=2 or trusted_key=path (True: a bare flag,
    top_class_only=True; False or None: left out); `demo=True` also serves the browser demo under /demo/; `workers=N`
    runs N worker processes, and the block starts once every one of them is ready; `tls` (helpers.tls.Certificates)
    serves HTTPS. The key reaches the server in its environment, never on its command line."""
    port = port or free_port()
    command = [sys.executable, "-m", "helpers.serving", "--repository", str(Path(repository).resolve()), "--port", str(port),
               "--host", host]
    command += ["--batching"] if batching else []
    command += ["--demo"] if demo else []
    if tls is not None:
        options = {**options, "tls_certfile": tls.cert, "tls_keyfile": tls.key}
    for flag, value in options.items():
        if value is None or value is False:
            continue
        command += [f"--{flag.replace('_', '-')}"] + ([] if value is True else [str(value)])
    env = {"COURSE_SERVING_API_KEY": api_key or ""}
    context = None if tls is None else client_context(tls)
    with running(command, "/v2/health/ready", name, port, env, host=host, ssl_context=context) as (url, process, log):
        if int(options.get("workers", 1)) > 1:
            wait_for_workers(url, int(options["workers"]), process, log, context=context)
        yield RunningServer(url, process.pid, log, api_key, tls)


def wait_for_workers(url: str, count: int, process, log: Path, timeout_s: float = 120.0, context=None) -> None:
    """With --workers N the server is ready once its first worker is (workers.py): wait until each of the `count`
    has answered /v2/health/ready with 200, on a new connection each time (the kernel picks the worker per connection;
    the answer's Server-Worker header names it), so that a test or a load test starts with every worker serving."""
    ready, deadline = set(), time.monotonic() + timeout_s
    while len(ready) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"only workers {sorted(ready)} of {count} became ready within {timeout_s} s (the server "
                               f"{'exited' if process.poll() is not None else 'runs'}); end of {log}:\n"
                               + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2, context=context) as response:
                ready.add(response.headers.get("Server-Worker"))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
