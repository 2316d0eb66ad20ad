"""Each chapter builds its central mechanisms in the open and checks them against the helper it then uses; each of
its exercises ends with a check that decides: it fails on the student's stub and on plausible mistakes, and passes
the worked solution and every alternative correct answer (tests/craft/<chapter>.py lists them; course_tools/exercises.py
runs them inside the chapter's smoke execution, the one tests/test_notebooks.py makes)."""

import nbformat
import pytest
from notebook_expectations import RUN_LIMIT_S
from test_notebooks import run_once

from course_tools import exercises, runner, student
from course_tools.nbclean import has_tag
from helpers import paths

# Chapters whose mechanisms and exercises are not yet listed in tests/craft/: each must leave this set once it has
# its file (test_every_chapter_has_its_craft_file fails both ways).
PENDING = set()
KINDS = {"code", "experiment", "question"}
MIN_EXERCISES = 3

NOTEBOOKS = {p.stem: p for p in paths.notebooks()}
CRAFTED = {stem: module for stem in NOTEBOOKS if (module := exercises.craft(stem)) is not None}


def read(stem):
    return nbformat.read(NOTEBOOKS[stem], as_version=4)


def course_meta(cell) -> dict:
    return cell.get("metadata", {}).get("course", {})


def by_stem(stems):
    return pytest.mark.parametrize("stem", sorted(stems))


def test_every_chapter_has_its_craft_file():
    missing = sorted(set(NOTEBOOKS) - set(CRAFTED) - PENDING)
    assert not missing, f"add tests/craft/<chapter>.py for {missing} (IN_THE_OPEN and EXERCISES; see docs/contributing.md)"
    done = sorted(PENDING & set(CRAFTED))
    assert not done, f"{done} now have their craft files: take them out of PENDING"


@by_stem(CRAFTED)
def test_the_chapter_builds_its_mechanisms_in_the_open(stem):
    nb, in_the_open = read(stem), CRAFTED[stem].IN_THE_OPEN
    assert in_the_open, f"{stem}: IN_THE_OPEN names no mechanism"
    built = {course_meta(c).get("open") for c in nb.cells if c.cell_type == "code"}
    checks = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and (name := course_meta(cell).get("open_check")):
            checks.setdefault(name, []).append(cell.source)
    problems = []
    for mechanism, helper in in_the_open.items():
        if mechanism not in built:
            problems.append(f"no code cell builds {mechanism!r} (metadata course.open)")
        function = helper.rsplit(".", 1)[-1]
        sources = checks.get(mechanism, [])
        if not any("assert" in s and function in s for s in sources):
            problems.append(f"no cell (metadata course.open_check = {mechanism!r}) asserts it agrees with {helper}")
    unknown = (built - {None}) | set(checks)
    unknown -= set(in_the_open)
    problems += [f"cells name the mechanism {m!r}, which IN_THE_OPEN does not list" for m in sorted(unknown)]
    assert not problems, f"{stem}: " + "; ".join(problems)


@by_stem(CRAFTED)
def test_the_exercises_are_well_formed_and_each_has_answers_to_prove_its_check(stem):
    nb, listed = read(stem), CRAFTED[stem].EXERCISES
    found = exercises.exercises(nb)
    problems = [p for exercise in found.values() for p in exercise.problems(nb)]
    if len(found) < MIN_EXERCISES:
        problems.append(f"{len(found)} exercises; a chapter has at least {MIN_EXERCISES}")
    if set(found) != set(listed):
        problems.append(f"the notebook's exercises are {sorted(found)}, tests/craft lists {sorted(listed)}")
    kinds = {number: entry.get("kind") for number, entry in listed.items()}
    problems += [f"exercise {n}'s kind is {k!r}, not one of {sorted(KINDS)}" for n, k in kinds.items() if k not in KINDS]
    if "code" not in kinds.values():
        problems.append("no exercise asks the learner to write code (kind 'code')")
    for number, entry in listed.items():
        if not entry.get("wrong"):
            problems.append(f"exercise {number} lists no plausible wrong answer")
        if not entry.get("right"):
            problems.append(f"exercise {number} lists no alternative correct answer")
    assert not problems, f"{stem}: " + "; ".join(problems)


@by_stem(CRAFTED)
def test_the_student_copy_runs_as_the_chapter_does_up_to_the_first_exercise(stem):
    nb = read(stem)
    copy = student.student_notebook(nb)
    first = next(i for i, c in enumerate(nb.cells) if has_tag(c, student.SOLUTION_TAG))
    assert [c.source for c in copy.cells[:first]] == [c.source for c in nb.cells[:first]]
    heading = min(e.heading for e in exercises.exercises(nb).values() if e.heading is not None)
    assert first > heading, f"{stem}: a solution cell (cell {first}) comes before the first exercise (cell {heading})"
    loose = [i for i, c in enumerate(nb.cells) if has_tag(c, student.SOLUTION_TAG) and exercises.exercise_of(c) is None]
    assert not loose, f"{stem}: solution cells {loose} belong to no exercise (metadata course.exercise)"
    checks = [c.source for c in nb.cells if has_tag(c, exercises.CHECK_TAG)]
    assert checks == [c.source for c in copy.cells if has_tag(c, exercises.CHECK_TAG)], "the student copy keeps every check"


def answer_cases():
    cases = []
    for stem, module in sorted(CRAFTED.items()):
        nb = read(stem)
        found = exercises.exercises(nb)
        for number, variants in module.EXERCISES.items():
            if number in found and not found[number].problems(nb):
                for name, (expect, _source) in exercises.answers(nb, found[number], variants).items():
                    cases.append(pytest.param(stem, number, name, expect, id=f"{stem}-{number}-{name}"))
    return cases


@pytest.mark.notebook
@pytest.mark.timeout(RUN_LIMIT_S)  # only when run alone: it then executes the notebook
@pytest.mark.parametrize(("stem", "number", "answer", "expect"), answer_cases())
def test_the_exercise_check_decides(stem, number, answer, expect):
    run = run_once(NOTEBOOKS[stem])
    outcomes = exercises.load_results(run.probes).get(str(number))
    if outcomes is None:
        pytest.fail(f"{stem}: exercise {number}'s probe did not run" + (
            f" (the chapter failed first, at {run.result.error})" if not run.result.ok else ""))
    outcome = outcomes[answer]
    if expect == "pass":
        assert outcome["outcome"] == "passed", f"the check refuses {answer}, a correct answer: {outcome.get('error')}"
    else:
        assert outcome["outcome"] != "answer raised", (
            f"{answer} raised before the check ran ({outcome['error']}): a wrong answer must run and be caught by the check")
        # the exercise's given code failing on it is as clear to the learner as the check failing
        assert outcome["outcome"] in ("check raised", "given code raised"), (
            f"the check passes {answer}, a wrong answer: it does not decide")


def tiny_chapter(check: str):
    cells = [
        nbformat.v4.new_markdown_cell("# Chapter 00 — a test\n\n### Exercise 1 — write `double(x)`"),
        nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("factor = 2"),
        nbformat.v4.new_code_cell("def double(x):\n    return factor * x", metadata={"tags": ["solution"], "course": {"exercise": 1}}),
        nbformat.v4.new_code_cell("given = [double(v) for v in range(3)]"),
        nbformat.v4.new_code_cell(check, metadata={"tags": ["check"], "course": {"exercise": 1}}),
        nbformat.v4.new_code_cell("assert double(21) == 42  # the notebook's own state is untouched by the probes"),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": runner.KERNEL_NAME, "display_name": runner.KERNEL_NAME, "language": "python"}
    return nb


@pytest.mark.integration
def test_the_probes_tell_a_deciding_check_from_one_that_passes_anything(tmp_path):
    variants = {1: {"wrong": {"adds": "def double(x):\n    return x + 2", "raises": "raise ValueError('no')"},
                    "right": {"a lambda": "double = lambda x: x * 2"}}}
    outcomes = {}
    for name, check in (("deciding", "assert given == [0, 2, 4] and double(5) == 10"), ("lax", "assert 'double' in dir() or True")):
        source = tmp_path / f"{name}.ipynb"
        nbformat.write(tiny_chapter(check), source)
        results = tmp_path / f"{name}.json"
        nbformat.write(exercises.with_probes(nbformat.read(source, as_version=4), variants, results), source)
        result = runner.execute(source, tmp_path / f"{name}-run.ipynb", smoke=True, progress=False)
        assert result.ok, result.error
        executed = nbformat.read(tmp_path / f"{name}-run.ipynb", as_version=4)
        assert not any(has_tag(c, runner.PROBE_TAG) for c in executed.cells), "the probes leave the executed copy"
        outcomes[name] = {answer: o["outcome"] for answer, o in exercises.load_results(results)["1"].items()}
    assert outcomes["deciding"] == {"the worked solution": "passed", "the student's stub": "given code raised",
                                    "wrong: adds": "check raised", "wrong: raises": "answer raised",
                                    "right: a lambda": "passed"}
    assert outcomes["lax"]["wrong: adds"] == "passed"  # so test_the_exercise_check_decides fails on a lax check
