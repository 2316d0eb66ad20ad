"""Execute a notebook with papermill in the course kernel, measuring wall time and peak memory.

Shared by `make test` (smoke mode) and `make course` (full mode), so both run notebooks the same way, and both get the
executed copy tidied the same way (`tidy`): the page shows what a reader of the chapter needs, not how it was run.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil

from course_tools import KERNEL as KERNEL_NAME
from helpers.progress import TEXT_MODE_VARIABLE
from helpers.report import RECORDED_RUN_VARIABLE

# what the kernel inherits from the runner: text progress bars in executed copies, and figures recorded where the
# course build keeps them (a chapter run by hand in JupyterLab records apart)
RUN_ENVIRONMENT = {TEXT_MODE_VARIABLE: "1", RECORDED_RUN_VARIABLE: "1"}

INJECTED_TAG = "injected-parameters"  # the cell papermill adds after the `parameters` cell: SMOKE = True, or a repeat
PROBE_TAG = "course-probe"  # the cells the tests add to prove each exercise's check decides (course_tools/exercises.py)


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


def execute(notebook: Path, output: Path, smoke: bool, cell_timeout_s: int = 900, progress: bool = True,
            cwd: Path | None = None) -> RunResult:
    """Run `notebook` with SMOKE=`smoke` in `cwd` (default: the notebook's folder), write the executed copy to
    `output`; never raises on a cell error."""
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
                cwd=str(cwd or notebook.parent),
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
    if output.exists():  # also after a failed cell: papermill saved the notebook up to it
        nbformat.write(tidy(nbformat.read(output, as_version=4)), output)
    return RunResult(notebook.stem, time.perf_counter() - start, memory.peak_bytes / 2**20, error)


def chapter_title(nb) -> str | None:
    """The notebook's first `# ` heading."""
    return next((line.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                 for line in c.source.splitlines() if line.startswith("# ")), None)


def terminal_text(text: str) -> str:
    """What a terminal shows once `text` is printed: a carriage return goes back to the start of the line and what
    follows overwrites it (a text progress bar's updates), a backspace steps back one character. A line so rewritten
    loses its trailing blanks (a bar that cleared itself leaves nothing); other lines are kept exactly."""
    lines = []
    for raw in text.split("\n"):
        if "\r" not in raw and "\b" not in raw:
            lines.append(raw)
            continue
        shown, column = [], 0
        for char in raw:
            if char == "\r":
                column = 0
            elif char == "\b":
                column = max(column - 1, 0)
            else:
                shown[column:column + 1] = [char]
                column += 1
        lines.append("".join(shown).rstrip())
    return "\n".join(lines)


def note_parameters(nb) -> None:
    """Where the runner set a parameter to another value than the `parameters` cell gives (SMOKE = True in make
    test), say so at the end of that cell, so the page never shows a setting the run did not use."""
    parameters = nb.metadata.get("papermill", {}).get("parameters", {})
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return
    differ = {name: value for name, value in parameters.items()
              if not re.search(rf"^{re.escape(name)}\s*=\s*{re.escape(repr(value))}\s*(#.*)?$", cell.source, re.M)}
    if differ:
        cell.source = cell.source.rstrip("\n") + "\n# this run: " + ", ".join(f"{k} = {v!r}" for k, v in differ.items())


def tidy(nb):
    """The executed copy as a reader should see it, in place: no cell papermill or the tests' probes injected (the values it set stay in
    the notebook's metadata, papermill.parameters), each run of stream outputs as its final text, and the chapter's
    title as the notebook's title (nbconvert's HTML <title>)."""
    nb.cells = [cell for cell in nb.cells if not {INJECTED_TAG, PROBE_TAG} & set(cell.metadata.get("tags", []))]
    note_parameters(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            if output.output_type == "stream" and outputs and outputs[-1].output_type == "stream" \
                    and outputs[-1].name == output.name:
                outputs[-1].text += output.text  # a progress bar's updates arrive one output each
            else:
                outputs.append(output)
        for output in outputs:
            if output.output_type == "stream":
                output.text = terminal_text(output.text)
        cell.outputs = [o for o in outputs if o.output_type != "stream" or o.text.strip()]
    if title := chapter_title(nb):
        nb.metadata["title"] = title
    return nb
