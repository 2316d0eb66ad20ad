"""`python -m helpers.serving --workers N`: N worker processes answering on one port, for a machine with more cores
than one event loop can keep busy.

How: this process, the supervisor, binds the address (without listening yet) and starts N workers, each a fresh
`python -m helpers.serving` with the same flags plus its index and the socket's file descriptor, which it inherits.
Each worker runs the app on that one socket with uvicorn (`uvicorn.Server.run(sockets=[...])`, the way Gunicorn's
uvicorn workers run). The supervisor serves no request: it restarts a worker that dies, and on SIGTERM or SIGINT
stops them all, then removes what they shared.

Why a socket bound once and shared, rather than the alternatives:
* uvicorn's own `workers=N` needs the app as an import string and pickles its config to spawned processes; the
  server's HTTP protocol class is built at start-up with its connection limits and a metrics counter
  (connections.limited_protocol), and uvicorn's supervisor has no hook to mark a dead worker's metrics dead;
* one SO_REUSEPORT socket per worker spreads connections by a hash on Linux only (not on macOS), lets any other
  process of the same user join the port and take a share of its connections, and drops the connections waiting in
  a worker's own queue when that worker dies. With one shared socket, connections wait in one queue, and any worker
  that is serving takes the next one.

What this gives:
* readiness: a worker listens (takes connections) only once its first scan has loaded and warmed its models, since
  uvicorn serves after the app's start-up; before the first worker does, connections are refused, as with one
  process. Afterwards a worker still loading (a replacement) takes no connection. The kernel hands each connection
  to one worker, which answers everything sent on it: /v2/health/ready says whether the worker answering it has a
  model to serve, and every answer names its worker in a `Server-Worker` header (app.WorkerPath);
* hot reload: each worker watches the repository and verifies, loads, warms and swaps a new version on its own, as
  one process does, so a request in flight during a swap is answered by the old version or the new one; for up to
  a poll interval, two workers can serve different latest versions;
* metrics: each worker writes its metrics to files in a fresh folder (PROMETHEUS_MULTIPROC_DIR) made at start and
  removed at stop, and a scrape of any worker reports every worker's, merged (metrics.py says how each gauge is);
  a dead worker's live gauges are dropped (`mark_process_dead`), its counters kept;
* per worker, not global: everything else the Server holds (app.Server), and the connection limits:
  --max-connections and --max-connections-per-client apply to each worker, so the server as a whole admits up to
  N times as many. The repository's load and unload routes answer 501 (each worker would act alone).

A worker that dies is restarted with the same index; more than MAX_RESTARTS deaths within RESTART_WINDOW_S stop the
server (exit code 1) rather than restart a worker that cannot run. A worker exits when its supervisor does, however
the supervisor ends (signal_when_parent_dies), so no worker outlives it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("helpers.serving")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_RESTARTS = 5  # worker deaths tolerated within RESTART_WINDOW_S...
RESTART_WINDOW_S = 60.0  # ...before the supervisor gives up and stops the server
GRACE_S = 8.0  # how long workers may take to finish their requests at stop (helpers.processes.stop allows 10 s)
POLL_S = 0.2  # how often the supervisor looks whether a worker died


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound and not yet listening: the first worker ready starts listening on it (uvicorn calls
    listen() when it starts serving), so that no connection waits on a server with no model loaded. SO_REUSEADDR, as
    uvicorn sets it: a port with connections still closing from an earlier run can be bound again."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """Starts `count` workers of `argv` (the server's own flags) on `sock`, restarts those that die, stops them all."""

    def __init__(self, argv: list[str], count: int, sock: socket.socket, metrics_dir: Path):
        self.argv, self.count, self.sock, self.metrics_dir = argv, count, sock, metrics_dir
        self.workers: dict[int, subprocess.Popen] = {}  # index -> its process
        self.deaths: list[float] = []  # when workers died unasked (monotonic), for the restart budget
        self.stopping = threading.Event()
        self.signal: int | None = None

    def start(self, index: int) -> None:
        command = [sys.executable, "-m", "helpers.serving", *self.argv, "--worker-index", str(index),
                   "--listen-fd", str(self.sock.fileno())]
        env = {**os.environ, MULTIPROC_ENV: str(self.metrics_dir)}
        self.workers[index] = subprocess.Popen(command, pass_fds=(self.sock.fileno(),), env=env)
        log.info("worker %d started (pid %d)", index, self.workers[index].pid)

    def on_signal(self, sig: int, frame) -> None:
        self.signal = self.signal or sig
        self.stopping.set()

    def run(self) -> int:
        """Until SIGTERM or SIGINT (returns 0), or until workers keep dying (returns 1)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.on_signal)
        code = 0
        try:
            for index in range(self.count):
                self.start(index)
            while not self.stopping.wait(POLL_S):
                if not self.restart_the_dead():
                    code = 1
                    break
        finally:
            self.stop()
        return code

    def restart_the_dead(self) -> bool:
        """Restart every worker that exited; False once too many have died lately."""
        from prometheus_client.multiprocess import mark_process_dead

        for index, process in list(self.workers.items()):
            if process.poll() is None or self.stopping.is_set():  # stopping: a signal may have reached it first
                continue
            mark_process_dead(process.pid, str(self.metrics_dir))  # its live gauges go; its counters stay
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW_S] + [now]
            if len(self.deaths) > MAX_RESTARTS:
                log.error("worker %d (pid %d) exited with code %s, the %d-th worker death within %.0f s: stopping the "
                          "server", index, process.pid, process.returncode, len(self.deaths), RESTART_WINDOW_S)
                return False
            log.error("worker %d (pid %d) exited with code %s; starting another", index, process.pid, process.returncode)
            self.start(index)
        return True

    def stop(self) -> None:
        """SIGTERM to every worker (they finish the requests they hold), SIGKILL to those still running after GRACE_S;
        then close the socket and remove the metrics folder."""
        from prometheus_client.multiprocess import mark_process_dead

        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for process in self.workers.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop within %.0f s: killed", process.pid, GRACE_S)
                process.kill()
                process.wait()
            mark_process_dead(process.pid, str(self.metrics_dir))
        self.sock.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def supervise(args, argv: list[str]) -> int:
    """Run `args.workers` workers of the server started with `argv` (its command line, --workers included)."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s[supervisor]: %(message)s")
    try:
        sock = bind(args.host, args.port)
    except OSError as error:
        print(f"cannot bind {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    metrics_dir = Path(tempfile.mkdtemp(prefix="course-serving-metrics-"))
    log.info("%d workers on %s:%d, their metrics in %s", args.workers, args.host, sock.getsockname()[1], metrics_dir)
    supervisor = Supervisor(argv, args.workers, sock, metrics_dir)
    code = supervisor.run()
    if supervisor.signal is not None:  # end the way a one-process server does on a signal: by that signal, once done
        signal.signal(supervisor.signal, signal.SIG_DFL)
        signal.raise_signal(supervisor.signal)
    return code


def serve(app, options: dict, fd: int) -> int:
    """Run `app` as one worker on the socket inherited as `fd`, until SIGTERM or SIGINT (or the supervisor's end)."""
    import uvicorn

    from helpers.processes import signal_when_parent_dies

    signal_when_parent_dies(signal.SIGTERM)
    sock = socket.socket(fileno=fd)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    server.run(sockets=[sock])
    return 0
