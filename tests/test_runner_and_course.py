"""The notebook runner reports failures instead of raising, and the course index shows what ran."""

import os

import nbformat
import pytest

from course_tools import course, runner
from helpers import paths
from helpers.progress import TEXT_MODE_VARIABLE


def tiny_notebook(path, body):
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("SMOKE = False")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Chapter 99 — A tiny test"), parameters, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": runner.KERNEL_NAME, "display_name": "course", "language": "python"}
    nb.metadata["course"] = {"source": "§0", "learn": "nothing"}
    nbformat.write(nb, path)
    return path


@pytest.mark.integration  # executes a notebook in a kernel
def test_a_failing_cell_is_reported_with_its_error_and_the_environment_is_restored(tmp_path):
    notebook = tiny_notebook(tmp_path / "99_fails.ipynb", "assert SMOKE is True\nraise ValueError('broken on purpose')")
    before = os.environ.get(TEXT_MODE_VARIABLE)
    result = runner.execute(notebook, tmp_path / "out.ipynb", smoke=True, progress=False)
    assert not result.ok and "ValueError" in result.error and "broken on purpose" in result.error
    assert result.seconds > 0 and (tmp_path / "out.ipynb").exists()
    assert os.environ.get(TEXT_MODE_VARIABLE) == before


@pytest.mark.integration  # executes a notebook in a kernel
def test_a_passing_notebook_gets_smoke_injected_and_text_progress(tmp_path):
    body = f"import os\nassert SMOKE is True\nassert os.environ['{TEXT_MODE_VARIABLE}'] == '1'"
    result = runner.execute(tiny_notebook(tmp_path / "99_ok.ipynb", body), tmp_path / "out.ipynb", smoke=True, progress=False)
    assert result.ok, result.error


def test_the_index_lists_each_chapter_with_its_runtime_and_failures(tmp_path):
    info = course.chapter_info(tiny_notebook(tmp_path / "99_ok.ipynb", "pass"))
    assert info["title"] == "Chapter 99 — A tiny test" and info["source"] == "§0"
    page = course.index_html([{**info, "seconds": 42.0, "peak_rss_mb": 2048, "error": None},
                              {**info, "notebook": "98_bad.ipynb", "seconds": 150.0, "peak_rss_mb": 100, "error": "cell 3: ValueError: x"},
                              {**info, "notebook": "97_later.ipynb", "not_run": True}])  # make course CHAPTERS=99,98
    assert "42 s" in page and "2.5 min" in page and "2.00 GiB" in page and "FAILED: cell 3: ValueError: x" in page
    assert "not run yet" in page
    assert "99_ok.html" in page and "98_bad.html" in page


def test_a_chapter_over_its_time_or_memory_budget_is_named_on_the_index():
    assert course.over_budget({"seconds": 300.0, "peak_rss_mb": 4096}) == []  # at the budget is within it
    assert course.over_budget({"seconds": 372.0, "peak_rss_mb": 5120}) == ["6.2 min > 5 min", "peak 5.00 GiB > 4 GiB"]
    info = {"notebook": "97_slow.ipynb", "title": "Chapter 97", "source": "", "learn": ""}
    page = course.index_html([{**info, "seconds": 372.0, "peak_rss_mb": 100, "error": None}])
    assert "over budget: 6.2 min &gt; 5 min" in page


def test_every_real_chapter_has_a_title_and_course_metadata():
    for notebook in paths.notebooks():
        info = course.chapter_info(notebook)
        assert info["title"].startswith("Chapter") and info["source"] and info["learn"]


def test_runs_are_recorded_per_notebook_and_kept_across_calls(tmp_path):
    path = tmp_path / "runs.json"
    assert runner.load_runs(path) == {}
    runner.record_run(path, runner.RunResult("01_a", 12.345, 1000.4))
    entry = runner.record_run(path, runner.RunResult("02_b", 3.0, 10.0, error="cell 2: ValueError: x"))
    assert entry == {"seconds": 3.0, "peak_rss_mb": 10, "error": "cell 2: ValueError: x"}
    assert runner.load_runs(path)["01_a"] == {"seconds": 12.3, "peak_rss_mb": 1000, "error": None}


def test_a_chapter_is_stale_when_any_input_it_reads_changes():
    """Chapter 07 reads monitoring/alerts.yml and chapter 09 serves web/: editing either must re-run them."""
    inputs = {p.relative_to(paths.ROOT).as_posix() for p in course.chapter_inputs(paths.NOTEBOOKS / "09_browser_edge.ipynb")}
    for expected in ("notebooks/09_browser_edge.ipynb", "requirements.txt", "helpers/serving/app.py",
                     "monitoring/alerts.yml", "web/demo.js", "web/package-lock.json"):
        assert expected in inputs, expected
    assert not any("node_modules" in name or "__pycache__" in name for name in inputs)


def test_make_course_chapters_names_chapters_by_number_or_stem_and_refuses_others():
    stems = [notebook.stem for notebook in paths.notebooks()]
    assert course.chosen_chapters("01, 03") == {stems[0], stems[2]}
    assert course.chosen_chapters(stems[1]) == {stems[1]}
    with pytest.raises(SystemExit, match="99"):
        course.chosen_chapters("01,99")
