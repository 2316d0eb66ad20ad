"""Notebook hygiene: strip outputs, execution counts and run metadata (`make strip`, and the student build)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

RUN_METADATA = ("execution", "papermill", "collapsed", "scrolled")


def has_tag(cell, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def strip_cell(cell) -> None:
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    for key in RUN_METADATA:
        cell.metadata.pop(key, None)


def strip_notebook(nb):
    for cell in nb.cells:
        strip_cell(cell)
    for key in ("papermill", "widgets"):  # run records and saved widget state (progress bars)
        nb.metadata.pop(key, None)
    return nb


def strip_file(path: Path) -> bool:
    """Strip `path` in place; True if it changed."""
    before = path.read_text(encoding="utf-8")
    nb = strip_notebook(nbformat.reads(before, as_version=4))
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


if __name__ == "__main__":
    for name in sys.argv[1:]:
        if strip_file(Path(name)):
            print(f"stripped {name}")
