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
                         (the trees' CPU time during the run / requests), the same split by what each process does
                         (cpu_ms_by_role: `role`), and rss_mib, pss_mib after it
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


def role(process) -> str:
    """A short name for what a process does: its title where it set one (Ray's "ray::ServeReplica:..."), the module or
    script a Python process runs, a multiprocessing worker as such, else the program's name."""
    import psutil

    try:
        command = process.cmdline()
        name = process.name()
    except psutil.Error:
        return "gone"
    if not command:
        return name
    program = command[0].rsplit("/", 1)[-1]
    if not program.startswith("python"):
        return program.split(":", 2)[0] + (":" + command[0].split(":", 2)[1] if command[0].startswith("ray::") else "")
    rest = command[1:]
    if "-m" in rest and rest.index("-m") + 1 < len(rest):
        module = rest[rest.index("-m") + 1]
        if "--worker-index" in rest and rest.index("--worker-index") + 1 < len(rest):  # the course's server, --workers N
            return f"{module} worker {rest[rest.index('--worker-index') + 1]}"
        return module
    if "-c" in rest:
        code = " ".join(rest[rest.index("-c") + 1:])
        return ("multiprocessing resource tracker" if "resource_tracker" in code
                else "multiprocessing worker" if "multiprocessing" in code else "python -c")
    scripts = [arg for arg in rest if not arg.startswith("-")]
    return scripts[0].rsplit("/", 1)[-1] if scripts else name


def cpu_by_role(pids) -> dict[str, float]:
    """CPU seconds so far (user + system, exited children included) of the trees under `pids`, summed by `role`."""
    import psutil

    totals = {}
    for process in members(pids):
        with contextlib.suppress(psutil.Error):
            t = process.cpu_times()
            label = role(process)
            totals[label] = totals.get(label, 0.0) + t.user + t.system + t.children_user + t.children_system
    return totals


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
    before, roles_before = cpu_seconds(served.pids), cpu_by_role(served.pids)
    row = loadgen.run(served.infer_url, body, headers, connections, seconds)
    spent, roles_after = cpu_seconds(served.pids) - before, cpu_by_role(served.pids)
    row = {"server": served.name, **row, "cpu_ms_per_request": 1000 * spent / max(row["requests"], 1),
           "cpu_cores": spent * row["requests_per_s"] / max(row["requests"], 1), "rss_mib": resident_bytes(served.pids) / MIB,
           "processes": len(members(served.pids)),
           "cpu_ms_by_role": {label: 1000 * (after - roles_before.get(label, 0.0)) / max(row["requests"], 1)
                              for label, after in roles_after.items() if after - roles_before.get(label, 0.0) > 0}}
    if pss_available():
        row["pss_mib"] = resident_bytes(served.pids, "pss") / MIB
    return row
