"""Every notebook in notebooks/, found on disk: committed clean, executed in smoke mode, and its metrics checked.

A new notebook is picked up without editing this file; it only needs an entry in notebook_expectations.py.
A part a notebook runs only where a program is installed (notebook_expectations.PARTS) gets a test of its own,
`test_notebook_part_ran[<notebook>-<part>]`: it passes when the part ran and is skipped, with the notebook's reason,
when the notebook recorded it as skipped; where COURSE_REQUIRE names the program, that skip fails (tests/conftest.py).
"""

import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import page_checks
import pytest
from notebook_expectations import EXPECTATIONS, OPS, PARTS, RUN_LIMIT_S, WITHOUT

from course_tools import course, exercises, runner
from course_tools.nbclean import has_tag
from helpers import paths, report

pytest_plugins = ["pytester"]  # the COURSE_REQUIRE hook's own tests run a small pytest session

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


@dataclass
class Run:
    """One smoke-mode execution of a notebook in this session, shared by its notebook test and its part tests."""
    result: runner.RunResult
    executed: Path  # the executed copy
    started: float
    left: list[str]  # processes it left running
    probes: Path | None  # what each exercise's check did on each answer (course_tools/exercises.py), if it has some

    def recorded(self) -> dict:
        recorded = report.load(self.result.notebook)
        assert recorded["started_at"] >= self.started, "the metrics file is left over from an earlier run: the notebook recorded nothing"
        return recorded


RUNS: dict[str, Run | None] = {}  # notebook stem -> its run; None while (or if) its execution did not finish


def run_once(notebook) -> Run:
    """Execute `notebook` in smoke mode, once per session, with its exercises' probes (removed from the copy)."""
    if notebook.stem in RUNS:
        if RUNS[notebook.stem] is None:
            pytest.fail(f"{notebook.name}'s execution did not finish in this session (see its notebook test)")
        return RUNS[notebook.stem]
    RUNS[notebook.stem] = None
    started = time.time()
    executed = EXECUTED_DIR / notebook.name
    probed, probes = exercises.probed_copy(notebook, EXECUTED_DIR / "probed")
    try:
        result = runner.execute(probed, executed, smoke=True, progress=False, cwd=notebook.parent)
    finally:  # also when the notebook failed: "stopped at the end, including when a cell fails"
        left = processes_started_since(started)
    runner.record_run(EXECUTED_DIR / "runs.json", result)  # smoke runtimes and memory, to spot a notebook growing slow
    RUNS[notebook.stem] = Run(result, executed, started, left, probes)
    return RUNS[notebook.stem]


def bar_applies(parts_needed: list[str], parts: dict) -> bool:
    """Whether a bar is checked: each part it names ran ("without <part>": was skipped). A part the notebook did not
    record counts as run, so its bars are checked (and its part test fails)."""
    for needed in parts_needed:
        if needed.startswith(WITHOUT):
            if parts.get(needed.removeprefix(WITHOUT), {}).get("ran", True):
                return False
        elif not parts.get(needed, {}).get("ran", True):
            return False
    return True


@by_stem(NOTEBOOKS)
@pytest.mark.notebook
@pytest.mark.timeout(RUN_LIMIT_S)
def test_notebook_runs_in_smoke_mode_and_records_good_metrics(notebook):
    run = run_once(notebook)
    result, left = run.result, run.left
    assert result.ok, f"{notebook.name} failed at {result.error}; the executed copy is {run.executed}" + (
        f"; it also left processes running: {left}" if left else "")
    assert not left, f"{notebook.name} left processes running: {left}"

    nb = nbformat.read(run.executed, as_version=4)
    skipped = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip() and c.execution_count is None]
    assert not skipped, f"code cells {skipped} did not run"

    recorded = run.recorded()
    assert recorded["smoke"] is True
    parts = recorded["parts"]
    failures = [f"part {part!r} is recorded but not in notebook_expectations.PARTS" for part in parts
                if part not in PARTS.get(notebook.stem, {})]
    for name, (op, bound, *parts_needed) in EXPECTATIONS[notebook.stem].items():
        if not bar_applies(parts_needed, parts):  # a part this machine lacks: test_notebook_part_ran reports it
            continue
        value = recorded["metrics"].get(name)
        if value is None:
            failures.append(f"{name}: not recorded")
        elif not OPS[op](value, bound):
            failures.append(f"{name} = {value!r}, expected {op} {bound}")
    assert not failures, "; ".join(failures)


PART_CASES = [(stem, part) for stem, parts in PARTS.items() for part in parts]


@pytest.mark.notebook
@pytest.mark.timeout(RUN_LIMIT_S)  # only when run alone: it then executes the notebook
@pytest.mark.parametrize(("stem", "part"), PART_CASES, ids=[f"{stem}-{part.replace(' ', '_')}" for stem, part in PART_CASES])
def test_notebook_part_ran(stem, part):
    notebook = next((n for n in NOTEBOOKS if n.stem == stem), None)
    assert notebook is not None, f"notebook_expectations.PARTS names {stem}, which is not in {paths.NOTEBOOKS}"
    run = run_once(notebook)
    try:
        recorded = run.recorded()["parts"].get(part)
    except (FileNotFoundError, AssertionError) as error:
        pytest.fail(f"{stem} did not record its parts ({error}); its notebook test says why")
    if recorded is None:
        pytest.fail(f"{stem} did not record whether {part!r} ran" + (
            f": it failed first, at {run.result.error}" if not run.result.ok else
            f": call run_report.part({part!r}, runs=..., because=...) where the notebook decides"))
    if not recorded["ran"]:
        needs = " and ".join(PARTS[stem][part])
        pytest.skip(f"{stem}: {part} skipped (needs {needs}): {recorded['because']}")
    assert run.result.ok, f"{stem} recorded that {part!r} runs, then failed at {run.result.error}"


@by_stem(NOTEBOOKS)
@pytest.mark.notebook
@pytest.mark.timeout(RUN_LIMIT_S)  # only when run alone: it then executes the notebook
def test_the_executed_copy_reads_clean_and_its_page_loads_nothing_from_the_network(notebook):
    run = run_once(notebook)
    nb = nbformat.read(run.executed, as_version=4)
    problems = page_checks.notebook_problems(nb)
    assert not problems, "; ".join(problems) + kernel_startup_hint()
    page = course.render_html(run.executed).read_text(encoding="utf-8")  # what `make course` publishes
    assert page_checks.page_title(page) == runner.chapter_title(nb)
    assert not page_checks.remote_resources(page), f"{notebook.stem}.html loads {page_checks.remote_resources(page)[:3]}"


def kernel_startup_hint() -> str:
    """Why start-up notices may reach a notebook: the kernel was registered before its spec set PYTHONSTARTUP."""
    import os

    from jupyter_client.kernelspec import KernelSpecManager

    if "PYTHONSTARTUP" in KernelSpecManager().get_kernel_spec(runner.KERNEL_NAME).env or "PYTHONSTARTUP" in os.environ:
        return ""
    return " (the course kernel's spec sets no PYTHONSTARTUP, so helpers/quiet.py never ran: run `make setup` again)"


def test_the_bars_and_optional_parts_follow_the_conventions():
    for stem, bars in EXPECTATIONS.items():
        for name, (_op, _bound, *parts_needed) in bars.items():
            unknown = [p for p in parts_needed if p.removeprefix(WITHOUT) not in PARTS.get(stem, {})]
            assert not unknown, f"{stem}'s bar {name} names {unknown}, not a part in notebook_expectations.PARTS[{stem!r}]"
    from conftest import TOOLS

    for stem, parts in PARTS.items():
        for part, tools in parts.items():
            assert tools and set(tools) <= set(TOOLS), f"{stem}: {part} needs {tools}; the programs are {list(TOOLS)}"


SKIPPING_TESTS = """
import pytest

@pytest.mark.skipif(True, reason="wrk is not installed (apt-get install wrk)")
def test_marked_for_a_program():
    pass

def test_part_of_a_notebook():
    pytest.skip("06_serving: load tests skipped (needs wrk): wrk is not installed")

def test_for_something_else():
    pytest.skip("no Python 3.12 here; a two-node cluster is not this machine; web/node_modules aside")
"""


def run_the_skipping_tests(pytester, monkeypatch, require: str | None):
    pytester.makeconftest((paths.ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_skipping=SKIPPING_TESTS)
    if require is None:
        monkeypatch.delenv("COURSE_REQUIRE", raising=False)
    else:
        monkeypatch.setenv("COURSE_REQUIRE", require)
    return pytester.runpytest_subprocess("-ra", "-p", "no:cacheprovider")


@pytest.mark.integration  # a pytest session in a subprocess
def test_without_course_require_a_missing_program_is_a_skip_with_its_reason(pytester, monkeypatch):
    result = run_the_skipping_tests(pytester, monkeypatch, None)
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*SKIPPED*wrk is not installed (apt-get install wrk)*"])


@pytest.mark.integration  # a pytest session in a subprocess
def test_a_skip_for_want_of_a_required_program_fails_naming_it_and_its_fix(pytester, monkeypatch):
    result = run_the_skipping_tests(pytester, monkeypatch, "wrk,chromium")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 1 and outcomes.get("failed", 0) + outcomes.get("errors", outcomes.get("error", 0)) == 2, outcomes
    result.stdout.fnmatch_lines(["*COURSE_REQUIRE: wrk, chromium*", "*wrk required here (COURSE_REQUIRE), but the test was skipped*", "*Fix (wrk): *apt-get install wrk*"])
    assert run_the_skipping_tests(pytester, monkeypatch, "all").parseoutcomes().get("skipped") == 1  # names no program


@pytest.mark.integration  # a pytest session in a subprocess
def test_a_misspelt_requirement_stops_the_run(pytester, monkeypatch):
    result = run_the_skipping_tests(pytester, monkeypatch, "wrk,chromum")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*COURSE_REQUIRE names*chromum*the programs it can require are*"])


# What a notebook may start and must stop: servers, Prometheus, torchrun and its workers, Ray and HAProxy, Chromium,
# and chapter 10's model servers (every process run from a server's venv, tritonserver and its backend stubs).
STARTED_BY_NOTEBOOKS = ("helpers.serving", "prometheus", "torch.distributed.run", "helpers.distributed", "ray::", "raylet",
                        "gcs_server", "/ray/_private/", "/ray/dashboard/", "haproxy", "tensorboard", "chromium",
                        "playwright/driver", "build/servers/", "tritonserver", "triton_python_backend_stub",
                        "servers/litserve/")


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
