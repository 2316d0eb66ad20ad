import nbformat
import pytest

from course_tools import student
from helpers import paths


def instructor_notebook():
    nb = nbformat.v4.new_notebook()
    answer = nbformat.v4.new_code_cell("x = 42", metadata={"tags": ["solution"]})
    answer.outputs = [nbformat.v4.new_output("stream", text="secret output")]
    answer.execution_count = 3
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Exercise 1"),
        nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]}),
        answer,
        nbformat.v4.new_markdown_cell("The derivation is ...", metadata={"tags": ["solution"]}),
        nbformat.v4.new_code_cell("assert x == 42"),
    ]
    return nb


def test_solutions_become_stubs_and_nothing_else_changes():
    nb = instructor_notebook()
    out = student.student_notebook(nb)
    assert [c.source for c in out.cells] == ["# Exercise 1", "SMOKE = False", student.CODE_STUB, student.MARKDOWN_STUB, "assert x == 42"]
    assert [c.cell_type for c in out.cells] == [c.cell_type for c in nb.cells]
    assert not any(student.is_solution(c) for c in out.cells)
    assert all(c.outputs == [] and c.execution_count is None for c in out.cells if c.cell_type == "code")
    assert nb.cells[2].source == "x = 42" and nb.cells[2].outputs  # the instructor copy is untouched


def test_build_writes_one_student_notebook_per_notebook(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    nbformat.write(instructor_notebook(), source / "01_example.ipynb")
    written = student.build_student(source, tmp_path / "out")
    assert [p.name for p in written] == ["01_example.ipynb"]
    text = (tmp_path / "out" / "01_example.ipynb").read_text()
    assert "x = 42" not in text and "secret output" not in text and "# Your solution here" in text


@pytest.mark.parametrize("notebook", paths.notebooks(), ids=lambda p: p.stem)
def test_every_course_notebook_loses_all_its_solutions(notebook):
    nb = nbformat.read(notebook, as_version=4)
    out = student.student_notebook(nb)
    solutions = sum(student.is_solution(c) for c in nb.cells)
    assert solutions > 0
    assert sum(c.source in (student.CODE_STUB, student.MARKDOWN_STUB) for c in out.cells) == solutions
    kept = {c.source for c in out.cells}
    assert not any(c.source in kept for c in nb.cells if student.is_solution(c))


def test_strip_file_removes_outputs_and_run_metadata_and_keeps_the_rest(tmp_path):
    from course_tools import nbclean

    nb = instructor_notebook()
    nb.cells[1].metadata["papermill"] = {"duration": 1.0}
    nb.metadata["papermill"] = {"parameters": {}}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert nbclean.strip_file(path) is True
    stripped = nbformat.read(path, as_version=4)
    assert all(c.outputs == [] and c.execution_count is None for c in stripped.cells if c.cell_type == "code")
    assert "papermill" not in stripped.metadata and "papermill" not in stripped.cells[1].metadata
    assert [c.source for c in stripped.cells] == [c.source for c in nb.cells]
    assert stripped.cells[2].metadata["tags"] == ["solution"]
    assert nbclean.strip_file(path) is False  # already clean: left untouched
