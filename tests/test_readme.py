"""The README is the newcomer's contract: its commands and its course map must match the repository."""

import re

from helpers import paths

README = (paths.ROOT / "README.md").read_text()


def test_the_quickstart_shows_the_commands_and_the_makefile_has_them():
    makefile = (paths.ROOT / "Makefile").read_text()
    for target in ("learn", "course", "test", "lab", "student"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no `{target}` target"


def test_every_notebook_is_in_the_course_map_with_its_computed_time_and_measured_runtime():
    from course_tools import times

    runtimes = times.load_runtimes()
    estimates = times.chapter_estimates(runtimes)
    header = next(line for line in README.splitlines() if line.startswith("| # | Notebook |"))
    assert header.rstrip().endswith(f"| {times.MAP_HEADER} |")
    for notebook in paths.notebooks():
        row = next((line for line in README.splitlines() if line.startswith("|") and notebook.name in line), None)
        assert row, f"{notebook.name} is missing from the README's course map"
        assert "(planned)" not in row, f"{notebook.name} exists: drop '(planned)' from its row"
        shown = re.search(r"\|\s*(\d+) min \((\d+(?:\.\d+)?\s*(?:s|min))\)\s*\|\s*$", row)
        assert shown, f"{notebook.name}: its row must end with its time and measured runtime: {times.RUN_ME}"
        expected = times.map_cell(estimates[notebook.stem])
        assert f"{shown.group(1)} min ({shown.group(2)})" == expected, \
            f"{notebook.name}: the map shows {shown.group(0).strip(' |')}, times.py computes {expected}: {times.RUN_ME}"
    block = README.split(times.BLOCK_BEGIN)[1].split(times.BLOCK_END)[0]
    assert f"{times.WORDS_PER_MINUTE} words a minute" in block and f"{times.CODE_LINES_PER_MINUTE} lines a minute" in block
    assert README.index(times.BLOCK_BEGIN) > README.index(header), "the block on how times are computed goes under the map"


def test_every_make_command_the_readme_names_is_a_makefile_target():
    makefile = (paths.ROOT / "Makefile").read_text()
    named = set(re.findall(r"`make ([a-z][\w-]*)", README)) | set(re.findall(r"^make ([a-z][\w-]*)", README, re.M))
    assert {"learn", "course", "times", "test"} <= named
    missing = sorted(t for t in named if not re.search(rf"^{re.escape(t)}:", makefile, re.M))
    assert not missing, f"the README names `make {missing[0]}`, which the Makefile does not have"


def test_make_help_lists_every_target_and_the_learner_s_command_comes_first():
    makefile = (paths.ROOT / "Makefile").read_text()
    helped = re.findall(r"^#   make (\S+)", makefile, re.M)
    targets = [t for line in re.findall(r"^\.PHONY: (.*)$", makefile, re.M) for t in line.split()]
    missing = [t for t in targets if t not in helped and t not in ("help", "distclean", "python-changed")]
    assert not missing, f"`make help` does not list {missing}"
    assert helped[0] == "learn"
    assert "OFFLINE=1" in makefile.split("SHELL :=")[0]
    quickstart = README.split("```bash")[1].split("```")[0]
    assert quickstart.split()[:2] == ["make", "learn"]
