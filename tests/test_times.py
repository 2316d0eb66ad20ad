"""course_tools/times.py: each chapter's time is computed from its content and its measured runtime, and what the
notebooks and the README show is what it computes now."""

import json
from types import SimpleNamespace

import nbformat
import pytest

from course_tools import times
from helpers import paths

CHAPTER = paths.NOTEBOOKS / "03_savedmodel_export.ipynb"


def chapter():
    return nbformat.read(CHAPTER, as_version=4)


def markdown(text, **metadata):
    return nbformat.v4.new_markdown_cell(text, metadata=metadata)


def code(text, **metadata):
    return nbformat.v4.new_code_cell(text, metadata=metadata)


def test_every_notebook_has_a_stored_full_mode_runtime():
    stored = times.load_runtimes()["chapters"]
    for notebook in paths.notebooks():
        entry = stored.get(notebook.stem)
        assert entry, f"{notebook.stem} has no runtime in course_tools/runtimes.json: {times.RUN_ME}"
        assert entry["seconds"] > 0 and entry["cpus"] >= 1 and entry["machine"] and entry["when"]
    assert set(stored) <= {notebook.stem for notebook in paths.notebooks()}, "runtimes.json lists a chapter that is gone"


@pytest.mark.parametrize("notebook", paths.notebooks(), ids=lambda notebook: notebook.stem)
def test_each_notebook_opens_with_the_time_computed_now(notebook):
    runtimes = times.load_runtimes()
    nb = nbformat.read(notebook, as_version=4)
    est = times.estimate(nb, notebook.stem, times.runtime_of(runtimes, notebook.stem)["seconds"])
    line = times.TIME_LINE.search(nb.cells[0].source)
    assert line, f"{notebook.name}: its opening cell has no **Time:** ... **Runtime:** ... line"
    expected = times.time_line(est, times.runtime_of(runtimes, notebook.stem)["cpus"])
    assert line.group(0) == expected, f"{notebook.name} shows {line.group(0)!r}, times.py computes {expected!r}: {times.RUN_ME}"
    assert notebook.read_text(encoding="utf-8") == times.expected_files(runtimes)[notebook], f"{notebook.name}: {times.RUN_ME}"


def test_the_readme_shows_the_times_computed_now():
    expected = times.expected_files(times.load_runtimes())[times.README]
    assert times.README.read_text(encoding="utf-8") == expected, f"README.md: its times are out of date: {times.RUN_ME}"


def test_more_prose_more_code_and_more_exercises_take_longer():
    nb = chapter()
    before = times.estimate(nb, CHAPTER.stem, 60)
    nb.cells.insert(1, markdown("word " * (times.WORDS_PER_MINUTE * 10)))
    more_prose = times.estimate(nb, CHAPTER.stem, 60)
    assert more_prose.words == before.words + times.WORDS_PER_MINUTE * 10
    assert more_prose.reading == pytest.approx(before.reading + 10)
    assert more_prose.total in (before.total + 10, before.total + 5, before.total + 15)
    nb.cells.insert(2, code("x = 1\n\n" * (times.CODE_LINES_PER_MINUTE * 4)))
    more_code = times.estimate(nb, CHAPTER.stem, 60)
    assert more_code.code_lines == more_prose.code_lines + times.CODE_LINES_PER_MINUTE * 4  # blank lines do not count
    assert more_code.reading == pytest.approx(more_prose.reading + 4)
    nb.cells.append(markdown("### Exercise 99 — one more\n\nDo it."))
    more_exercises = times.estimate(nb, CHAPTER.stem, 60)
    assert more_exercises.exercise_count == more_code.exercise_count + 1
    assert more_exercises.exercises == more_code.exercises + times.UNLISTED_EXERCISE_MINUTES
    assert more_exercises.total > before.total


def test_a_longer_run_takes_longer():
    nb = chapter()
    quick, slow = times.estimate(nb, CHAPTER.stem, 10), times.estimate(nb, CHAPTER.stem, 10 + 20 * 60)
    assert slow.running - quick.running == pytest.approx(20)
    assert slow.total - quick.total == 20


def test_solutions_and_the_time_line_itself_do_not_count_but_fenced_code_counts_as_code():
    nb = chapter()
    words, lines = times.reading_counts(nb)
    nb.cells.append(code("answer = 42\n" * 50, tags=["solution"]))
    nb.cells.append(markdown("A worked answer " * 50, tags=["solution"]))
    nb.cells[0].source = times.TIME_LINE.sub("**Time:** about 999 minutes, many more words here. **Runtime:** long.",
                                             nb.cells[0].source)
    assert times.reading_counts(nb) == (words, lines)
    nb.cells.append(markdown("Run this:\n\n```bash\nmake course\n\nmake times\n```\n\nthen read it."))
    assert times.reading_counts(nb) == (words + 5, lines + 2)


def test_each_exercise_is_allowed_minutes_by_its_kind():
    from course_tools.exercises import craft

    stem = "01_loss_and_gradients"
    listed = craft(stem).EXERCISES
    nb = nbformat.read(paths.NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    expected = [times.EXERCISE_MINUTES[listed[n]["kind"]] for n in sorted(listed)]
    assert times.exercise_minutes(nb, stem) == expected
    assert len(set(expected)) > 1, "chapter 01 should have exercises of more than one kind"
    # a chapter without a craft file: every exercise gets the unlisted allowance
    assert times.exercise_minutes(nb, "99_no_such_chapter") == [times.UNLISTED_EXERCISE_MINUTES] * len(expected)


def test_an_unknown_exercise_kind_is_refused(monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[markdown("### Exercise 1 — write an essay")])
    monkeypatch.setattr(times, "craft", lambda stem: SimpleNamespace(EXERCISES={1: {"kind": "essay"}}))
    with pytest.raises(ValueError, match="essay"):
        times.exercise_minutes(nb, "99_x")
    monkeypatch.setattr(times, "craft", lambda stem: SimpleNamespace(EXERCISES={1: {"kind": "question"}}))
    assert times.exercise_minutes(nb, "99_x") == [times.EXERCISE_MINUTES["question"]]


@pytest.mark.parametrize("minutes, rounded", [(0, 5), (2.4, 5), (62.4, 60), (62.5, 65), (67.4, 65), (67.6, 70)])
def test_the_total_is_rounded_to_the_nearest_step(minutes, rounded):
    assert times.round_to_step(minutes) == rounded


def test_only_the_chapters_in_runs_json_that_succeeded_are_stored():
    runtimes = {"chapters": {"01_a": {"seconds": 20.0}, "02_b": {"seconds": 300.0}, "03_c": {"seconds": 30.0}}}
    runs = {"01_a": {"seconds": 25.5, "error": None}, "02_b": {"seconds": 12.0, "error": "cell 3: ValueError: x"}}
    assert times.store_runs(runtimes, runs, "2026-01-01") == ["01_a"]
    assert runtimes["chapters"]["01_a"]["seconds"] == 25.5 and "2026-01-01" in runtimes["chapters"]["01_a"]["when"]
    assert runtimes["chapters"]["02_b"] == {"seconds": 300.0} and runtimes["chapters"]["03_c"] == {"seconds": 30.0}
    assert times.store_runs(runtimes, {"03_c": {"seconds": 9.0, "error": None}}, "2026-01-02", chapters={"01_a"}) == []
    assert runtimes["chapters"]["03_c"] == {"seconds": 30.0}


def test_rewriting_a_notebook_changes_its_time_line_only_and_keeps_the_format():
    text = CHAPTER.read_text(encoding="utf-8")
    rewritten = times.rewrite_notebook_text(text, "**Time:** about 5 minutes. **Runtime:** 1 s.")
    before, after = json.loads(text), json.loads(rewritten)
    assert after["cells"][1:] == before["cells"][1:] and after["metadata"] == before["metadata"]
    changed = [(a, b) for a, b in zip(before["cells"][0]["source"], after["cells"][0]["source"]) if a != b]
    assert len(changed) == 1 and changed[0][1] == "**Time:** about 5 minutes. **Runtime:** 1 s.\n"
    assert rewritten == json.dumps(after, indent=1, ensure_ascii=False) + "\n"
    assert "outputs" not in rewritten or all(not c.get("outputs") for c in after["cells"])


def test_the_readme_map_and_paragraph_follow_the_runtimes():
    runtimes = times.load_runtimes()
    stem = paths.notebooks()[0].stem
    runtimes["chapters"][stem] = {**runtimes["chapters"][stem], "seconds": 3600.0}
    readme = times.rewrite_readme(times.README.read_text(encoding="utf-8"), times.chapter_estimates(runtimes), runtimes)
    row = next(line for line in readme.splitlines() if line.startswith("|") and f"{stem}.ipynb" in line)
    assert row.rstrip().endswith("(60.0 min) |")
    assert f"chapter {stem[:2]} took 60.0 min, over its 5-minute budget" in readme
    with pytest.raises(ValueError, match="times:begin"):
        times.rewrite_readme("no block here", times.chapter_estimates(runtimes), runtimes)


def test_the_instructors_guide_shows_the_times_computed_now():
    expected = times.expected_files(times.load_runtimes())[times.INSTRUCTORS]
    assert times.INSTRUCTORS.read_text(encoding="utf-8") == expected, f"docs/instructors.md: its times are out of date: {times.RUN_ME}"


def test_the_instructors_table_and_agendas_follow_the_estimates():
    runtimes = times.load_runtimes()
    estimates = times.chapter_estimates(runtimes)
    first = next(iter(estimates))
    longer = {**estimates, first: times.Estimate(**{**vars(estimates[first]), "total": estimates[first].total + 60})}
    before, after = times.guide_block(estimates, runtimes), times.guide_block(longer, runtimes)
    half_day = [c for c in times.AGENDAS["Half a day"] if any(stem.startswith(c) for stem in estimates)]
    minutes = sum(e.total for stem, e in estimates.items() if stem[:2] in half_day)
    assert f"half a day ({half_day[0]}–{half_day[-1]}): {times.hours_and_minutes(minutes)} of chapters" in before
    assert f"half a day ({half_day[0]}–{half_day[-1]}): {times.hours_and_minutes(minutes + 60)} of chapters" in after
    assert f"| {estimates[first].total + 60} min |" in after
    with pytest.raises(ValueError, match="times:guide:begin"):
        times.rewrite_guide("no block here", estimates, runtimes)
