"""Shared test setup. Notebooks executed by the tests write their artifacts under build/test-artifacts,
so smoke-mode models and metrics never mix with the full-mode ones `make course` produces."""

import os

from helpers import paths

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
