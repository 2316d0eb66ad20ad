"""Start and stop every process the course launches, and only those.

The rule: nothing here ever stops a process that this Python process did not start, directly or through the processes
it started. A process is never picked by its name or command line alone; a command line only narrows down this
process's own descendants.

    running(command, ready_path, name, port)   an HTTP process for the length of a `with` block, always stopped
    stop(process)                               a Popen and every process under it
    stop_descendants(*marks)                    this process's descendants whose command line mentions a mark
    sweep(*marks)                               the same until none has appeared for a while (late orphans)
    adopt_orphans()                             orphaned descendants stay descendants (Linux), so the above find them
    signal_when_parent_dies(sig)                `sig` to this process when its parent exits (a launcher under `make`)
    free_port(), port_free(port)                ports on 127.0.0.1
    free_port_to_bind_later()                   a port outside the kernel's ephemeral range, for a later bind

Stopping lists the whole tree with psutil before any signal: a process group is not enough, since torchrun starts each
worker in a session of its own, and a child whose parent has gone is no longer under it. Then SIGTERM, a grace period,
SIGKILL for the survivors, and every stopped process is waited for. Standard library only at import time: `make doctor`
imports the port helpers on a bare python3 before setup; psutil is imported inside the functions that use it.
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
from pathlib import Path

from helpers import paths
from helpers.fixes import with_fix

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
PARENT_POLL_S = 0.5  # where there is no PR_SET_PDEATHSIG, how often a watcher thread looks whether the parent is gone
KILL_WAIT_S = 5.0  # how long a SIGKILLed process may take to disappear before we give up waiting for it


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_to_bind_later(low: int = 20000, high: int = 32000) -> int:
    """A free port for a program that binds it only later, after other programs have started: chosen below the kernel's
    ephemeral range (32768-60999 by default, where `free_port` and every outgoing connection draw from) and above Ray's
    worker ports (10002-19999), so that nothing started meanwhile is handed the same port by the kernel."""
    import random

    for _ in range(200):
        port = random.randint(low, high)
        if port_free(port) and port_free(port, "0.0.0.0"):
            return port
    raise RuntimeError(f"no free port between {low} and {high}")


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


# --------------------------------------------------------------------------- stopping


def tree(pid: int) -> list:
    """`pid` and every process under it, as psutil.Process objects (empty if it is gone). Taken before any signal: once
    a parent exits, its children are reparented and no longer under it."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def own_group(pid: int) -> int | None:
    """`pid`'s process group if `pid` leads one (it was started with start_new_session=True), else None. Everything in
    such a group descends from `pid`, so signalling the group stays within the rule; it also reaches what `pid` started
    and then left (a daemon that forked away)."""
    try:
        return pid if os.getpgid(pid) == pid else None
    except ProcessLookupError:
        return None


def signal_all(members: list, sig: int, group: int | None = None) -> None:
    import psutil

    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):  # psutil checks the pid was not reused since it was listed
            member.send_signal(sig)
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def wait_all(members: list, timeout_s: float, popen: subprocess.Popen | None = None) -> list:
    """Wait up to `timeout_s` for `members` to exit; returns those still running. `popen`'s own process is waited for
    through its Popen, so that it keeps its exit code (psutil would reap it first and Popen would then read 0)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    root = [m for m in members if popen is not None and m.pid == popen.pid]
    _, alive = psutil.wait_procs([m for m in members if m not in root], timeout=timeout_s)
    if root:
        try:
            popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            alive += root
    return alive


def stop_all(members: list, grace_s: float = 10.0, group: int | None = None, popen: subprocess.Popen | None = None) -> None:
    """SIGTERM to `members` (and `group`), up to `grace_s` for them to exit, then SIGKILL for the survivors; waiting
    for them also reaps them, so none stays a zombie. `grace_s=0`: SIGKILL straight away."""
    alive = members
    if grace_s > 0:
        signal_all(alive, signal.SIGTERM, group)
        alive = wait_all(alive, grace_s, popen)
    if alive:
        signal_all(alive, signal.SIGKILL, group)
        wait_all(alive, KILL_WAIT_S, popen)


def stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop `process` and every process under it, also those in sessions of their own (torchrun's workers)."""
    if process.poll() is not None:
        return
    stop_all(tree(process.pid), grace_s, own_group(process.pid), process)
    process.wait()  # returns at once, unless it had already gone when the tree was listed


def descendants(*marks: str) -> list:
    """This process's descendants now, or only those whose command line contains one of `marks`."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:  # gone since the listing, or a zombie
            continue
        if not marks or any(mark in command for mark in marks):
            found.append(process)
    return found


def stop_descendants(*marks: str, grace_s: float = 0.0) -> int:
    """Stop this process's descendants whose command line mentions one of `marks`; returns how many there were. A
    process outside this process's tree is never touched, whatever its command line says. `grace_s=0`: SIGKILL."""
    matching = descendants(*marks)
    stop_all(matching, grace_s)
    return len(matching)


def sweep(*marks: str, quiet_s: float = 1.0, poll_s: float = 0.2) -> None:
    """`stop_descendants(*marks)` until none has appeared for `quiet_s`: for processes that a shutdown can still start
    (an HAProxy reload while Ray Serve shuts down). Orphans are found only under `adopt_orphans()`."""
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        if stop_descendants(*marks):
            quiet_since = time.monotonic()
        time.sleep(poll_s)


def adopt_orphans() -> bool:
    """Make this process a child subreaper (Linux): a descendant whose parent exits is reparented to this process
    instead of to init, so it stays a descendant that `stop_descendants` and `sweep` can find. Returns whether that is
    in effect; elsewhere it does nothing and returns False. The setting lasts for the life of this process (a notebook:
    until the kernel restarts) and is not inherited by its children; adopted orphans that exit are reaped when a stop or
    a sweep waits for them. Called every time rather than once: a forked child does not inherit it."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def prctl(option: int, value: int) -> bool:
    """Linux's prctl(2) through ctypes; whether it took effect (False on any other system)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def signal_when_parent_dies(sig: int = signal.SIGTERM) -> str:
    """Have `sig` sent to this process when its parent exits, however it exits (SIGKILL too), so that a launcher
    whose parent is killed (`make demo`: make passes a SIGTERM on to its recipe, but a SIGKILL cannot be passed on)
    stops the way it stops on `sig`, through its own handler and `finally` blocks. Linux: PR_SET_PDEATHSIG, from the
    kernel at once; elsewhere a daemon thread that looks every PARENT_POLL_S whether the parent changed. Returns which
    ("prctl" or "thread"). Linux sends it when the parent *thread* that started this process exits (make has only
    one); the request is not inherited by this process's own children."""
    parent = os.getppid()
    if prctl(PR_SET_PDEATHSIG, sig):
        mechanism = "prctl"
    else:
        import threading

        def watch():
            while os.getppid() == parent:
                time.sleep(PARENT_POLL_S)
            os.kill(os.getpid(), sig)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
        mechanism = "thread"
    if os.getppid() != parent:  # the parent exited before the request took effect: nobody would send it any more
        os.kill(os.getpid(), sig)
    return mechanism


# --------------------------------------------------------------------------- starting


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float, ssl_context=None) -> None:
    """Poll `url` until it answers 200 (over HTTPS: verified with `ssl_context`, an ssl.SSLContext)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(with_fix(f"the server exited with code {process.returncode} while starting; end of {log}:\n"
                                         + log.read_text()[-3000:], "not-ready"))
        try:
            with urllib.request.urlopen(url, timeout=2, context=ssl_context) as response:
                if response.status == 200:
                    return
        except urllib.error.URLError as error:
            if is_certificate_error(error.reason):  # the server answers, with a certificate that fails: say so now
                raise RuntimeError(f"{url} answers with a certificate that fails verification: {error.reason}; see "
                                   f"{log}") from None
        except (ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(with_fix(f"{url} did not answer 200 within {timeout_s} s; see {log}", "not-ready"))


def is_certificate_error(reason) -> bool:
    import ssl

    return isinstance(reason, ssl.SSLCertVerificationError)


def local_address(host: str) -> str:
    """The address that reaches a server bound to `host` from this machine: 127.0.0.1 for every IPv4 address
    (0.0.0.0 or "") and ::1 for every IPv6 one (::), the address itself otherwise."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def http_url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@contextmanager
def running(command: list[str], ready_path: str, name: str, port: int, env: dict | None = None, timeout_s: float = 120.0,
            host: str = "127.0.0.1", ssl_context=None):
    """Run `command` (which must listen on `host`:`port`, 127.0.0.1 unless told) until the block ends; yields (url,
    process, log), the url on this machine's side (127.0.0.1 for a server bound to 0.0.0.0). With `ssl_context` (an
    ssl.SSLContext trusting the server's CA) the server speaks HTTPS: the url is https://, and readiness is polled with
    the certificate verified, so a block never starts on a server whose certificate clients would refuse. Output goes to
    artifacts/logs/<name>-<port>.log; readiness is polled, never assumed after a fixed sleep; leaving the block
    (normally, on an error, or on a notebook interrupt) stops the process and everything under it."""
    log = paths.artifacts() / "logs" / f"{name}-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    url = http_url(local_address(host), port, "https" if ssl_context is not None else "http")
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})}, cwd=paths.ROOT)
    stop_this = functools.partial(stop, process)
    atexit.register(stop_this)  # also when the kernel shuts down with the block still open (a cell left it open)
    try:
        wait_until_ready(url + ready_path, process, log, timeout_s, ssl_context)
        yield url, process, log
    finally:
        stop_this()
        atexit.unregister(stop_this)
