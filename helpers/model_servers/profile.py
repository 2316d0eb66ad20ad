"""Where a server's CPU goes, sampled with py-spy while wrk loads it: the share of samples in each package.

py-spy (pinned in requirements.txt) reads a running Python process's stacks from outside, without changing or
slowing it much (`--nonblocking`: it does not pause the process to read). Each sample's innermost Python frame is
attributed to the package its file belongs to (uvicorn, starlette, fastapi, onnxruntime, asyncio, the course's
helpers.serving, the service file in servers/, ...): time in a C extension counts to the Python frame that called it,
so ONNX Runtime's own work shows up as `onnxruntime`. Processes started by the server are sampled too
(`--subprocesses`). Only Python is seen: Triton's C++ front end is not (its statistics extension says where its time
goes instead).

py-spy needs the right to trace another process (ptrace): as root, or the same user where
/proc/sys/kernel/yama/ptrace_scope allows it; macOS needs sudo. `missing()` says why it cannot run here.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from helpers import paths
from helpers.serving import loadgen

FRAME = re.compile(r"\((?P<file>.*):\d+\)$")  # py-spy's raw format: "function (file:line)"


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


def missing() -> str | None:
    """None if py-spy can sample a child process here; else why not."""
    binary = py_spy()
    if binary is None:
        return "py-spy is not installed (requirements.txt pins it; `make setup`)"
    child = subprocess.Popen([sys.executable, "-c", "while True: sum(range(1000))"])
    try:
        time.sleep(0.2)
        result = subprocess.run([binary, "dump", "--pid", str(child.pid)], capture_output=True, text=True, timeout=30)
    finally:
        child.kill()
        child.wait()
    if result.returncode != 0:
        return f"py-spy cannot read another process's stacks here (needs ptrace: root, or sudo on macOS): {result.stderr.strip()[-200:]}"
    return None


def package_of(frame: str) -> str:
    """The package a py-spy frame's file belongs to: a site-packages package, a part of the course, or the standard
    library's module."""
    if frame.startswith("process "):  # --subprocesses puts "process <pid>:<command>" at a stack's root
        return "native code (no Python frame)"
    match = FRAME.search(frame)
    file = match.group("file") if match else frame
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    path = Path(file)
    if paths.ROOT in path.parents:
        relative = path.relative_to(paths.ROOT).parts
        return ".".join(relative[:2]).removesuffix(".py") if relative[0] == "helpers" else "/".join(relative[:2])
    if "/lib/python3." in file:
        return "python: " + file.split("/lib/python3.", 1)[1].split("/", 2)[1].removesuffix(".py")
    return "python: " + file


def innermost_frames(stack_files) -> Counter:
    """How many samples had each innermost frame ("function (file:line)"), from py-spy raw output files."""
    counts = Counter()
    for file in stack_files:
        for line in Path(file).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                counts[stack.rsplit(";", 1)[-1]] += int(count)
    return counts


def shares(frames: Counter) -> dict[str, float]:
    """Share of samples by the package of their innermost frame, largest first."""
    by_package = Counter()
    for frame, count in frames.items():
        by_package[package_of(frame)] += count
    total = sum(by_package.values()) or 1
    return {package: n / total for package, n in by_package.most_common()}


def functions(frames: Counter, package: str, top: int = 8) -> dict[str, float]:
    """The `top` functions of `package` by share of all samples ("file:function", the line dropped)."""
    by_function = Counter()
    for frame, count in frames.items():
        if package_of(frame) == package:
            name, file = frame.split(" (", 1)[0], FRAME.search(frame).group("file") if FRAME.search(frame) else "?"
            by_function[f"{Path(file).name}:{name}"] += count
    total = sum(frames.values()) or 1
    return {function: n / total for function, n in by_function.most_common(top)}


def under_load(served, body: bytes, headers: dict, connections: int, seconds: float, rate: int = 200) -> Counter:
    """Sample every process of `served` with py-spy during one wrk run of `seconds` at `connections`: the samples'
    innermost frames (`shares` and `functions` read them)."""
    duration = max(1, math.ceil(seconds))
    with tempfile.TemporaryDirectory() as tmp:
        spies = [subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--duration", str(duration), "--rate", str(rate),
                                   "--format", "raw", "--full-filenames", "--subprocesses", "--nonblocking",
                                   "--output", f"{tmp}/{pid}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid in served.pids]
        try:
            loadgen.run(served.infer_url, body, headers, connections, duration)
        finally:
            for spy in spies:
                spy.wait(timeout=duration + 30)
        return innermost_frames(Path(tmp).glob("*.txt"))
