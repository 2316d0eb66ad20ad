"""Proof that each exercise's check decides: it fails on wrong answers and passes every correct one.

A chapter's exercise N is a markdown cell `### Exercise N — ...`, solution cells (tag `solution`, metadata
`course.exercise = N`) and one check cell after them (tag `check`, same metadata). `tests/craft/<chapter>.py` lists,
per exercise, plausible wrong answers and alternative correct ones (`EXERCISES`), and the mechanisms the chapter builds
in the open (`IN_THE_OPEN`).

`with_probes` adds two cells per exercise to a copy of the notebook, run in the tests' smoke execution and removed from
the executed copy afterwards (`runner.tidy` drops cells tagged `PROBE_TAG`):
- before the exercise's first solution cell, a snapshot of the kernel's globals;
- after its check cell, a probe: for each answer (the worked solution, the student's stub, each variant) it takes a
  shallow copy of the snapshot, runs the answer in place of the solution cells (the exercise's given code cells still
  run, in order), then the check cell, and writes what happened to a JSON file the tests read.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import nbformat

from course_tools.nbclean import has_tag
from course_tools.runner import PROBE_TAG
from course_tools.student import CODE_STUB, SOLUTION_TAG
from helpers import paths

CHECK_TAG = "check"
CRAFT_DIR = paths.ROOT / "tests" / "craft"
HEADING = re.compile(r"^###\s+Exercise\s+(\d+)\b", re.M)


def craft(stem: str) -> ModuleType | None:
    """The chapter's `tests/craft/<stem>.py`, or None where it has none."""
    path = CRAFT_DIR / f"{stem}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"craft_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise_of(cell) -> int | None:
    number = cell.get("metadata", {}).get("course", {}).get("exercise")
    return int(number) if number is not None else None


@dataclass
class Exercise:
    number: int
    heading: int | None  # cell index of its `### Exercise N` heading
    solutions: list[int]  # cell indices of its solution cells
    checks: list[int]  # cell indices of its check cells (one, when well formed)

    def problems(self, nb) -> list[str]:
        """What is wrong with its shape in the notebook."""
        name, found = f"exercise {self.number}", []
        if self.heading is None:
            found.append(f"{name} has no markdown heading `### Exercise {self.number} — ...`")
        if not [i for i in self.solutions if nb.cells[i].cell_type == "code"]:
            found.append(f"{name} has no solution code cell (tag `solution`, course.exercise = {self.number})")
        if len(self.checks) != 1:
            found.append(f"{name} has {len(self.checks)} check cells (tag `check`, course.exercise = {self.number}); it needs one")
        elif self.solutions and self.checks[0] < max(self.solutions):
            found.append(f"{name}'s check cell comes before one of its solution cells")
        if self.heading is not None and self.solutions and min(self.solutions) < self.heading:
            found.append(f"{name} has a solution cell before its heading")
        return found


def exercises(nb) -> dict[int, Exercise]:
    """The notebook's exercises by number, from their headings and cell metadata."""
    found: dict[int, Exercise] = {}

    def get(number: int) -> Exercise:
        return found.setdefault(number, Exercise(number, None, [], []))

    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and (match := HEADING.search(cell.source)):
            get(int(match.group(1))).heading = index
        number = exercise_of(cell)
        if number is None:
            continue
        if has_tag(cell, SOLUTION_TAG):
            get(number).solutions.append(index)
        elif has_tag(cell, CHECK_TAG):
            get(number).checks.append(index)
    return dict(sorted(found.items()))


def run_cells(nb, exercise: Exercise) -> list[str | None]:
    """The code the probe runs for an answer, in order: None where the answer goes (the first solution code cell),
    the source of each given code cell between it and the check; the other solution cells are the answer's too."""
    code_solutions = [i for i in exercise.solutions if nb.cells[i].cell_type == "code"]
    first, check = code_solutions[0], exercise.checks[0]
    cells: list[str | None] = []
    for index in range(first, check):
        cell = nb.cells[index]
        if cell.cell_type != "code":
            continue
        if index == first:
            cells.append(None)
        elif index not in code_solutions:
            cells.append(cell.source)
    return cells


def answers(nb, exercise: Exercise, variants: dict) -> dict[str, tuple[str, str]]:
    """Every answer the probe tries: name -> ("pass" or "fail", source)."""
    solution = "\n\n".join(nb.cells[i].source for i in exercise.solutions if nb.cells[i].cell_type == "code")
    tried = {"the worked solution": ("pass", solution), "the student's stub": ("fail", CODE_STUB)}
    for expect, key in (("fail", "wrong"), ("pass", "right")):
        for name, source in variants.get(key, {}).items():
            tried[f"{key}: {name}"] = (expect, source)
    return tried


SNAPSHOT = """# course probe (removed from the executed copy): the globals before exercise {number}'s solution
globals().setdefault("_course_snapshots", {{}})[{number}] = dict(globals())
"""

PROBE = '''# course probe (removed from the executed copy): exercise {number}'s check, run on each answer
def _course_probe(number, cells, check, answers, results_path):
    import contextlib, io, json, pathlib
    shell = get_ipython()
    outcomes = {{}}
    for name, (expect, source) in answers.items():
        namespace, stage = dict(_course_snapshots[number]), "answer"
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                for cell in cells:
                    code, stage = (source, "answer") if cell is None else (cell, "given code")
                    exec(compile(shell.transform_cell(code), f"<exercise {{number}}: {{name}}>", "exec"), namespace)
                stage = "check"
                exec(compile(shell.transform_cell(check), f"<exercise {{number}}'s check>", "exec"), namespace)
            outcomes[name] = {{"expect": expect, "outcome": "passed"}}
        except Exception as error:
            outcomes[name] = {{"expect": expect, "outcome": f"{{stage}} raised",
                              "error": f"{{type(error).__name__}}: {{error}}"[:400]}}
        finally:
            import sys
            if "matplotlib.pyplot" in sys.modules:
                sys.modules["matplotlib.pyplot"].close("all")
    path = pathlib.Path(results_path)
    recorded = json.loads(path.read_text()) if path.exists() else {{}}
    recorded[str(number)] = outcomes
    path.write_text(json.dumps(recorded, indent=1))

_course_probe({number}, {cells!r}, {check!r}, {answers!r}, {results!r})
del _course_probe
'''


def probe_cell(source: str):
    return nbformat.v4.new_code_cell(source, metadata={"tags": [PROBE_TAG]})


def with_probes(nb, variants: dict, results: Path):
    """A copy of `nb` with a snapshot cell and a probe cell around each exercise `variants` names."""
    nb = nbformat.from_dict(nb)
    found = exercises(nb)
    insert: dict[int, list] = {}  # cell index -> cells to insert before it
    for number, exercise in found.items():
        if number not in variants or exercise.problems(nb):
            continue  # a malformed exercise fails its own structural test
        first = next(i for i in exercise.solutions if nb.cells[i].cell_type == "code")
        insert.setdefault(first, []).append(probe_cell(SNAPSHOT.format(number=number)))
        probe = PROBE.format(number=number, cells=run_cells(nb, exercise), check=nb.cells[exercise.checks[0]].source,
                             answers=answers(nb, exercise, variants[number]), results=str(results))
        insert.setdefault(exercise.checks[0] + 1, []).append(probe_cell(probe))
    cells = []
    for index, cell in enumerate(nb.cells + [None]):
        cells.extend(insert.get(index, []))
        if cell is not None:
            cells.append(cell)
    nb.cells = cells
    return nb


def probed_copy(notebook: Path, out_dir: Path) -> tuple[Path, Path | None]:
    """Write the notebook with its probes to `out_dir`; returns (notebook to run, results file or None)."""
    module = craft(notebook.stem)
    if module is None or not getattr(module, "EXERCISES", None):
        return notebook, None
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / f"{notebook.stem}.probes.json"
    results.unlink(missing_ok=True)
    probed = out_dir / notebook.name
    nbformat.write(with_probes(nbformat.read(notebook, as_version=4), module.EXERCISES, results), probed)
    return probed, results


def load_results(results: Path) -> dict:
    return json.loads(results.read_text()) if results.exists() else {}
