"""The README is the newcomer's contract: its commands and its course map must match the repository."""

import re

from helpers import paths

README = (paths.ROOT / "README.md").read_text()


def test_the_quickstart_shows_the_commands_and_the_makefile_has_them():
    makefile = (paths.ROOT / "Makefile").read_text()
    for target in ("learn", "course", "test", "lab", "student"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no `{target}` target"


def test_every_notebook_is_in_the_course_map_with_a_measured_runtime():
    for notebook in paths.notebooks():
        row = next((line for line in README.splitlines() if line.startswith("|") and notebook.name in line), None)
        assert row, f"{notebook.name} is missing from the README's course map"
        assert "(planned)" not in row, f"{notebook.name} exists: drop '(planned)' from its row"
        assert re.search(r"\|\s*\d+(\.\d+)?\s*(s|min)\s*\|\s*$", row), f"{notebook.name}: put its measured full-mode runtime in the map"


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
