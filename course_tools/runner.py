"""Execute a notebook with papermill in the course kernel, measuring wall time and peak memory.

Shared by `make test` (smoke mode) and `make course` (full mode), so both run notebooks the same way.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from course_tools import KERNEL as KERNEL_NAME
from helpers.progress import TEXT_MODE_VARIABLE
from helpers.report import RECORDED_RUN_VARIABLE

# what the kernel inherits from the runner: text progress bars in executed copies, and figures recorded where the
# course build keeps them (a chapter run by hand in JupyterLab records apart)
RUN_ENVIRONMENT = {TEXT_MODE_VARIABLE: "1", RECORDED_RUN_VARIABLE: "1"}


@dataclass
class RunResult:
    notebook: str
    seconds: float
    peak_rss_mb: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class PeakMemory:
    """Samples the resident memory of this process's children (the kernel) until stopped."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # a child that just exited
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def load_runs(path: Path) -> dict:
    """{notebook: {seconds, peak_rss_mb, error}} from a runs.json, or {} if there is none yet."""
    return json.loads(path.read_text()) if path.exists() else {}


def record_run(path: Path, result: RunResult) -> dict:
    """Add `result` to the runs.json at `path` (make course and make test both keep one); returns its entry."""
    runs = load_runs(path)
    runs[result.notebook] = {"seconds": round(result.seconds, 1), "peak_rss_mb": round(result.peak_rss_mb), "error": result.error}
    path.write_text(json.dumps(runs, indent=2))
    return runs[result.notebook]


def require_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        from helpers.fixes import with_fix

        raise RuntimeError(with_fix(f"Jupyter kernel '{KERNEL_NAME}' is not registered.", "kernel"))


def execute(notebook: Path, output: Path, smoke: bool, cell_timeout_s: int = 900, progress: bool = True) -> RunResult:
    """Run `notebook` with SMOKE=`smoke`, write the executed copy to `output`; never raises on a cell error."""
    import papermill

    require_kernel()
    output.parent.mkdir(parents=True, exist_ok=True)
    previous = {name: os.environ.get(name) for name in RUN_ENVIRONMENT}
    os.environ.update(RUN_ENVIRONMENT)
    start = time.perf_counter()
    error = None
    with PeakMemory() as memory:
        try:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters={"SMOKE": smoke},
                kernel_name=KERNEL_NAME,
                cwd=str(notebook.parent),
                execution_timeout=cell_timeout_s,
                progress_bar=progress,
            )
        except papermill.PapermillExecutionError as exc:
            error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
        except Exception as exc:  # a cell timeout, a dead kernel (out of memory): reported, never fatal to the caller
            error = f"{type(exc).__name__}: {exc}"
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return RunResult(notebook.stem, time.perf_counter() - start, memory.peak_bytes / 2**20, error)
