"""`make learn`: the learner's own copy of the course, in `workspace/` (git-ignored), opened in JupyterLab.

The copy is the student version (`make student`: exercises without their solutions). It is written once: a chapter
already in the workspace is the learner's work and is never overwritten. `make learn REFRESH=03` (or `REFRESH=all`)
moves the learner's copy of chapter 03 (or of every chapter) into `workspace/backup-<date-time>/` and writes a fresh
one. JupyterLab saves outputs into the workspace, which git ignores, so the repository stays clean.

`make lab` opens `notebooks/`, the instructor's copy with solutions, which git tracks: there the Jupyter server strips
outputs and execution counts from every notebook it saves (`strip_on_save`, which
`course_tools/jupyter_server_config.py` registers), so working in it never leaves outputs in tracked files either.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import nbformat

from course_tools.nbclean import strip_notebook
from course_tools.student import student_notebook
from helpers import paths

WORKSPACE = paths.ROOT / "workspace"


def chapters_named(refresh: str, notebooks: list[Path]) -> list[Path]:
    """The chapters `REFRESH=` names: "all", or chapter numbers or stems separated by commas ("03", "3,05_quantization")."""
    if refresh.strip() == "all":
        return notebooks
    chosen = []
    for name in filter(None, (part.strip() for part in refresh.split(","))):
        matches = [nb for nb in notebooks if nb.stem == name or nb.stem.split("_")[0] == name.zfill(2)]
        if not matches:
            raise ValueError(f"REFRESH={refresh}: no chapter {name!r}; name a chapter number (03), a notebook "
                             f"({notebooks[0].stem}) or all")
        chosen += matches
    return chosen


def prepare(workspace: Path = WORKSPACE, refresh: str = "", notebooks: list[Path] | None = None) -> dict[str, list[str]]:
    """Write the student copy of each chapter missing from `workspace`; back up and rewrite those `refresh` names.
    Returns {"written": [...], "kept": [...], "backed_up": [...]} (file names)."""
    notebooks = notebooks if notebooks is not None else paths.notebooks()
    workspace.mkdir(parents=True, exist_ok=True)
    to_refresh = chapters_named(refresh, notebooks) if refresh else []
    backup = workspace / time.strftime("backup-%Y%m%d-%H%M%S")
    done: dict[str, list[str]] = {"written": [], "kept": [], "backed_up": []}
    for source in notebooks:
        target = workspace / source.name
        if target.exists() and source in to_refresh:
            backup.mkdir(exist_ok=True)
            shutil.move(target, backup / source.name)
            done["backed_up"].append(source.name)
        if target.exists():
            done["kept"].append(source.name)
            continue
        nbformat.write(student_notebook(nbformat.read(source, as_version=4)), target)
        done["written"].append(source.name)
    return done


def strip_on_save(model: dict, path: str, contents_manager, **_) -> None:
    """Jupyter server pre-save hook: a notebook saved into `notebooks/` (tracked by git) is saved without outputs,
    execution counts or widget state; anywhere else (the learner's workspace) it is saved as it is."""
    if model.get("type") != "notebook":
        return
    saved_to = (Path(contents_manager.root_dir) / path).resolve()
    if saved_to.parent == paths.NOTEBOOKS.resolve():
        model["content"] = strip_notebook(nbformat.from_dict(model["content"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_tools.workspace", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=WORKSPACE, help="the workspace (default workspace/)")
    parser.add_argument("--refresh", default="", help="chapters to back up and copy afresh: 03, 3,05 or all")
    args = parser.parse_args(argv)
    try:
        done = prepare(args.dir, args.refresh)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if done["backed_up"]:
        print(f"Backed up your copy of {', '.join(done['backed_up'])} to {args.dir}/backup-*/ (the newest folder)")
    if done["written"]:
        print(f"Wrote {len(done['written'])} chapter(s) to {args.dir}/: {', '.join(done['written'])}")
    if done["kept"]:
        print(f"Kept your work in {len(done['kept'])} chapter(s) (make learn REFRESH=03 starts chapter 03 afresh, "
              "with a backup)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
