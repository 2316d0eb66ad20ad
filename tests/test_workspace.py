"""The learner's workspace (`make learn`): written once, never overwritten, refreshed with a backup; the lab's
pre-save hook keeps outputs out of the tracked notebooks; and, driven in a real JupyterLab in Chromium, a learner's
work is saved in the workspace while the repository and the course build's figures stay as they were."""

import json
import subprocess
import sys
import time

import nbformat
import pytest

from course_tools import workspace
from course_tools.student import CODE_STUB
from helpers import browser, paths, report
from helpers.processes import free_port, running

CHAPTER = "01_loss_and_gradients"


def test_the_workspace_gets_the_exercises_without_solutions(tmp_path):
    done = workspace.prepare(tmp_path)
    assert done["written"] == [nb.name for nb in paths.notebooks()] and not done["kept"]
    copy = nbformat.read(tmp_path / f"{CHAPTER}.ipynb", as_version=4)
    assert any(c.source == CODE_STUB for c in copy.cells), "the solutions were not replaced by stubs"
    assert not any("solution" in c.metadata.get("tags", []) for c in copy.cells)


def test_the_learner_s_work_is_never_overwritten(tmp_path):
    workspace.prepare(tmp_path)
    mine = tmp_path / f"{CHAPTER}.ipynb"
    mine.write_text(mine.read_text().replace(CODE_STUB.strip(), "answer = 42"))
    done = workspace.prepare(tmp_path)
    assert not done["written"] and f"{CHAPTER}.ipynb" in done["kept"]
    assert "answer = 42" in mine.read_text()


def test_a_refresh_backs_up_the_learner_s_copy_first(tmp_path):
    workspace.prepare(tmp_path)
    mine = tmp_path / f"{CHAPTER}.ipynb"
    mine.write_text(mine.read_text().replace(CODE_STUB.strip(), "answer = 42"))
    done = workspace.prepare(tmp_path, refresh="1")
    assert done["backed_up"] == done["written"] == [mine.name]
    [backup] = tmp_path.glob(f"backup-*/{mine.name}")
    assert "answer = 42" in backup.read_text() and "answer = 42" not in mine.read_text()


def test_a_refresh_naming_no_chapter_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no chapter '42'"):
        workspace.prepare(tmp_path, refresh="42")


def saved_with_hook(root, name, nb):
    from jupyter_server.services.contents.filemanager import FileContentsManager

    manager = FileContentsManager(root_dir=str(root))
    manager.register_pre_save_hook(workspace.strip_on_save)
    manager.save({"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))}, name)
    return nbformat.read(root / name, as_version=4)


def notebook_with_output():
    cell = nbformat.v4.new_code_cell("1 + 1", execution_count=1,
                                     outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)])
    return nbformat.v4.new_notebook(cells=[cell])


def test_the_lab_saves_the_tracked_notebooks_without_outputs_and_the_workspace_with_them(tmp_path, monkeypatch):
    tracked, elsewhere = tmp_path / "notebooks", tmp_path / "workspace"
    tracked.mkdir(), elsewhere.mkdir()
    monkeypatch.setattr(paths, "NOTEBOOKS", tracked)
    [cell] = saved_with_hook(tracked, "x.ipynb", notebook_with_output()).cells
    assert cell.outputs == [] and cell.execution_count is None
    [cell] = saved_with_hook(elsewhere, "x.ipynb", notebook_with_output()).cells
    assert cell.outputs and cell.execution_count == 1  # the hook strips only what git tracks


def test_the_lab_s_server_settings_register_the_hook(tmp_path):
    from traitlets.config import Config

    settings = Config()
    exec((paths.ROOT / "course_tools" / "jupyter_server_config.py").read_text(), {"get_config": lambda: settings})
    manager = settings.ServerApp.contents_manager_class(root_dir=str(tmp_path))
    assert workspace.strip_on_save in manager._pre_save_hooks


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=paths.ROOT, capture_output=True, text=True,
                          check=True).stdout


KERNEL_READY = """() => {
    const name = document.querySelector('.jp-Toolbar-kernelName')?.textContent?.trim() ?? '';
    return name !== '' && name !== 'No Kernel' && !document.querySelector('.jp-Dialog')
        && !!document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
}"""
CELLS_RAN = """n => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]
    .filter(p => /\\[\\d+\\]/.test(p.textContent)).length >= n"""
LAB_STATE = """() => ({kernel: document.querySelector('.jp-Toolbar-kernelName')?.textContent,
    status: document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status,
    dialog: document.querySelector('.jp-Dialog')?.textContent ?? null,
    prompts: [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')].map(p => p.textContent).slice(0, 8)})"""


def run_first_cells_and_save(url: str, notebook: str, cells: int):
    """In a real JupyterLab: open `notebook`, run its first `cells` cells with Shift+Enter as a learner does, save."""
    def drive(chromium):
        page = chromium.new_page()
        try:
            page.goto(f"{url}/lab/tree/{notebook}", timeout=120_000)
            page.locator(".jp-Notebook .jp-Cell").first.click(timeout=120_000)
            # The indicator reads 'idle' before any kernel exists (its default), so wait for the kernel's name too:
            # keys pressed before the session has its kernel can land in a "Select Kernel" dialog and run nothing.
            page.wait_for_function(KERNEL_READY, timeout=180_000)
            for _ in range(cells):
                page.keyboard.press("Shift+Enter")
            try:  # the kernel is done when the last code cell it ran has an execution count, i.e. "[n]:"
                page.wait_for_function(CELLS_RAN, arg=2, timeout=180_000)
            except Exception as error:
                raise AssertionError(f"the cells did not run; the lab showed: {page.evaluate(LAB_STATE)}") from error
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
            page.keyboard.press("Control+s")
            page.wait_for_timeout(500)
        finally:
            page.close()

    return drive


@pytest.mark.integration
@pytest.mark.skipif(browser.chromium_path() is None, reason=f"no Chromium for JupyterLab: {browser.missing()}")
def test_a_learner_works_in_the_lab_and_the_repository_and_the_course_figures_stay_unchanged(tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("COURSE_ARTIFACTS", str(artifacts))
    for name in (report.RECORDED_RUN_VARIABLE, "COURSE_TEXT_PROGRESS"):  # what only the course's runner sets
        monkeypatch.delenv(name, raising=False)
    with monkeypatch.context() as build:  # the figures `make course` recorded for the chapter
        build.setenv(report.RECORDED_RUN_VARIABLE, "1")
        report.start(CHAPTER, smoke=False).record(final_loss=0.001)
    built = report.metrics_path(CHAPTER).read_bytes()
    learner = tmp_path / "workspace"
    assert workspace.main(["--dir", str(learner)]) == 0
    status_before = git_status()
    port, token = free_port(), "course-test"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={token}", f"--config={paths.ROOT / 'course_tools' / 'jupyter_server_config.py'}",
               f"--notebook-dir={learner}", "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
               "jupyterlab.NeverCheckForUpdate"]
    started = time.monotonic()
    with running(command, "/api", "jupyterlab", port) as (url, _, _), browser.running_browser() as chromium:
        drive = run_first_cells_and_save(url, f"{CHAPTER}.ipynb?token={token}", cells=4)
        chromium.call(drive, chromium.browser, timeout_s=420)
    print(f"JupyterLab session: {time.monotonic() - started:.0f} s")
    saved = nbformat.read(learner / f"{CHAPTER}.ipynb", as_version=4)
    assert any(c.get("outputs") for c in saved.cells if c.cell_type == "code"), "the learner's outputs were not saved"
    assert git_status() == status_before, "working in the lab changed files git tracks"
    assert report.metrics_path(CHAPTER).read_bytes() == built, "the course build's figures were overwritten"
    assert report.load(CHAPTER, interactive=True)["smoke"] is False  # the lab run recorded apart
