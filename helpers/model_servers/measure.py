"""What every server costs in processes: CPU time and memory of the processes that serve, and one load-test row.

A server is a set of process trees (`Served.pids`: the launcher, or Ray's processes); each tree is listed again at
every measurement, so workers started later are counted too. Standard psutil numbers, per process:

    cpu_seconds(pids)    user + system CPU seconds of every process in the trees, plus what their exited (and reaped)
                         children used (psutil's children_user/children_system)
    resident_bytes(pids) resident memory summed over the trees. kind="rss": shared pages (the Python interpreter,
                         ONNX Runtime's library, memory shared after a fork) are counted once per process that maps
                         them, so the sum overstates what N processes take together; kind="pss" (Linux) divides
                         each shared page among the processes that share it, so the sum is what they take together
    load_row(served, body, headers, connections, seconds)   helpers.serving.loadgen.run plus cpu_ms_per_request
                         (the trees' CPU time during the run / requests) and rss_mib, pss_mib after it
"""

from __future__ import annotations

import contextlib

from helpers import processes
from helpers.serving import loadgen

MIB = 1024 * 1024


def members(pids) -> list:
    """Every process of the trees under `pids`, once each (psutil.Process objects)."""
    seen = {}
    for pid in pids:
        for process in processes.tree(pid):
            seen.setdefault(process.pid, process)
    return list(seen.values())


def cpu_seconds(pids) -> float:
    import psutil

    total = 0.0
    for process in members(pids):
        with contextlib.suppress(psutil.Error):
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def resident_bytes(pids, kind: str = "rss") -> int:
    """Resident memory of the trees under `pids`: kind "rss" (shared pages once per process), "pss" or "uss"
    (Linux: psutil reads /proc/<pid>/smaps_rollup; pss splits shared pages, uss counts only a process's own)."""
    import psutil

    total = 0
    for process in members(pids):
        with contextlib.suppress(psutil.Error):
            info = process.memory_info() if kind == "rss" else process.memory_full_info()
            total += getattr(info, kind)
    return total


def pss_available() -> bool:
    import psutil

    return hasattr(psutil.Process().memory_full_info(), "pss")


def load_row(served, body: bytes, headers: dict, connections: int, seconds: float) -> dict:
    """One wrk run against `served.infer_url` (helpers.serving.loadgen.run), with the server's processes' CPU time
    per request during the run and their memory after it."""
    before = cpu_seconds(served.pids)
    row = loadgen.run(served.infer_url, body, headers, connections, seconds)
    spent = cpu_seconds(served.pids) - before
    row = {"server": served.name, **row, "cpu_ms_per_request": 1000 * spent / max(row["requests"], 1),
           "cpu_cores": spent * row["requests_per_s"] / max(row["requests"], 1), "rss_mib": resident_bytes(served.pids) / MIB,
           "processes": len(members(served.pids))}
    if pss_available():
        row["pss_mib"] = resident_bytes(served.pids, "pss") / MIB
    return row
