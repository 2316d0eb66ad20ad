"""Every notebook in notebooks/, found on disk: committed clean, executed in smoke mode, and its metrics checked.

A new notebook is picked up without editing this file; it only needs an entry in notebook_expectations.py.
"""

import shutil
import time

import nbformat
import pytest
from notebook_expectations import EXPECTATIONS, OPS, SMOKE_BUDGET_S, TIME_LIMIT_FACTOR

from course_tools import runner
from course_tools.nbclean import has_tag
from helpers import paths, report

NOTEBOOKS = paths.notebooks()
EXECUTED_DIR = paths.build() / "test-notebooks"


def by_stem(notebooks):
    return pytest.mark.parametrize("notebook", notebooks, ids=lambda p: p.stem)


def tagged(nb, tag):
    return [c for c in nb.cells if has_tag(c, tag)]


def test_the_course_has_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {paths.NOTEBOOKS}"


@by_stem(NOTEBOOKS)
def test_committed_notebook_is_stripped_and_follows_the_conventions(notebook):
    nb = nbformat.read(notebook, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} carry outputs or execution counts: strip them before committing"
    parameters = tagged(nb, "parameters")
    assert len(parameters) == 1 and "SMOKE = False" in parameters[0].source, "needs one `parameters` cell with SMOKE = False"
    assert tagged(nb, "solution"), "needs at least one exercise solution cell tagged `solution`"
    assert nb.metadata.get("kernelspec", {}).get("name") == runner.KERNEL_NAME
    assert {"source", "learn"} <= set(nb.metadata.get("course", {})), "needs course metadata (source section, what you learn)"
    assert notebook.stem in EXPECTATIONS, f"add the metrics {notebook.stem} must record to tests/notebook_expectations.py"


@by_stem(NOTEBOOKS)
@pytest.mark.notebook
@pytest.mark.timeout(SMOKE_BUDGET_S * TIME_LIMIT_FACTOR)
def test_notebook_runs_in_smoke_mode_and_records_good_metrics(notebook):
    started = time.time()
    executed = EXECUTED_DIR / notebook.name
    try:
        result = runner.execute(notebook, executed, smoke=True, progress=False)
    finally:  # also when the notebook failed: "stopped at the end, including when a cell fails"
        left = processes_started_since(started)
    runner.record_run(EXECUTED_DIR / "runs.json", result)  # smoke runtimes and memory, to spot a notebook growing slow
    assert result.ok, f"{notebook.name} failed at {result.error}; the executed copy is {executed}" + (
        f"; it also left processes running: {left}" if left else "")
    assert not left, f"{notebook.name} left processes running: {left}"

    nb = nbformat.read(executed, as_version=4)
    skipped = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip() and c.execution_count is None]
    assert not skipped, f"code cells {skipped} did not run"

    recorded = report.load(notebook.stem)
    assert recorded["started_at"] >= started, "the metrics file is left over from an earlier run: the notebook recorded nothing"
    assert recorded["smoke"] is True
    failures = []
    for name, (op, bound, *needs) in EXPECTATIONS[notebook.stem].items():
        if needs and not available(needs[0]):  # a part this machine lacks (the notebook skips it and says so)
            continue
        value = recorded["metrics"].get(name)
        if value is None:
            failures.append(f"{name}: not recorded")
        elif not OPS[op](value, bound):
            failures.append(f"{name} = {value!r}, expected {op} {bound}")
    assert not failures, "; ".join(failures)



def available(need: str) -> bool:
    """"browser": what chapter 09 checks (Playwright, a Chromium, ONNX Runtime Web); else a program on the PATH."""
    if need == "browser":
        from helpers import browser

        return browser.missing() is None
    return shutil.which(need) is not None


# What a notebook may start and must stop: servers, Prometheus, torchrun and its workers, Ray and HAProxy, Chromium.
STARTED_BY_NOTEBOOKS = ("helpers.serving", "prometheus", "torch.distributed.run", "helpers.distributed", "ray::", "raylet",
                        "gcs_server", "/ray/_private/", "/ray/dashboard/", "haproxy", "tensorboard", "chromium",
                        "playwright/driver")


def processes_started_since(started: float, grace_s: float = 15.0) -> list[str]:
    """Processes matching STARTED_BY_NOTEBOOKS created after `started` and still alive `grace_s` seconds from now at
    the latest (a process being stopped gets that long)."""
    import psutil

    me = psutil.Process().username()  # another user's servers are none of this test's business
    time.sleep(3)  # a process started while the kernel shut down must show up before we look
    deadline = time.time() + grace_s
    while True:
        left = []
        for process in psutil.process_iter(["cmdline", "create_time", "status", "username"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or [])
                if (process.info["create_time"] >= started and process.info["status"] != psutil.STATUS_ZOMBIE
                        and process.info["username"] == me
                        and any(mark in cmdline for mark in STARTED_BY_NOTEBOOKS)):
                    left.append(f"{process.pid}: {cmdline[:120]}")
            except psutil.Error:
                continue
        if not left or time.time() > deadline:
            return left
        time.sleep(0.5)
