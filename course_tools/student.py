"""`make student`: the learner's copy of the course, with worked solutions replaced by stubs.

The notebooks in notebooks/ are the instructor version (one source for exercises and solutions).
Every cell tagged `solution` becomes a stub of the same kind; all outputs are stripped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from course_tools.nbclean import has_tag, strip_notebook
from helpers import paths

SOLUTION_TAG = "solution"
CODE_STUB = "# Your solution here\n"
MARKDOWN_STUB = "*Your answer here.*"


def is_solution(cell) -> bool:
    return has_tag(cell, SOLUTION_TAG)


def stub_for(cell):
    if cell.cell_type == "code":
        return nbformat.v4.new_code_cell(CODE_STUB, metadata={"tags": ["exercise"]})
    return nbformat.v4.new_markdown_cell(MARKDOWN_STUB, metadata={"tags": ["exercise"]})


def student_notebook(nb):
    """A copy of `nb` with solution cells stubbed and outputs stripped."""
    nb = nbformat.from_dict(nb)  # deep copy: the instructor notebook stays untouched
    nb.cells = [stub_for(cell) if is_solution(cell) else cell for cell in nb.cells]
    return strip_notebook(nb)


def build_student(source_dir: Path = paths.NOTEBOOKS, out_dir: Path | None = None) -> list[Path]:
    """Write the student copy of every notebook in `source_dir` to `out_dir` (default build/student)."""
    out_dir = out_dir or paths.build() / "student"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(source_dir.glob("*.ipynb")):
        nb = nbformat.read(source, as_version=4)
        stubbed = sum(is_solution(c) for c in nb.cells)
        target = out_dir / source.name
        nbformat.write(student_notebook(nb), target)
        print(f"{target} ({stubbed} solution cells replaced)")
        written.append(target)
    return written


if __name__ == "__main__":
    build_student(out_dir=Path(sys.argv[1]) if len(sys.argv) > 1 else None)
