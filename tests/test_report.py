import json

import numpy as np
import pytest

from helpers import report

pytestmark = pytest.mark.usefixtures("artifacts_in_tmp")


@pytest.fixture(autouse=True)
def recorded_run(monkeypatch):
    """These tests record as the course's runner does (make course, make test); the last one runs as JupyterLab does."""
    monkeypatch.setenv(report.RECORDED_RUN_VARIABLE, "1")


def test_recorded_figures_are_written_and_read_back(tmp_path):
    r = report.start("99_example", smoke=True)
    r.record(accuracy=np.float32(0.5), errors=np.array([1e-9, 2e-9]), framework="torch")
    loaded = report.load("99_example")
    assert loaded["smoke"] is True and loaded["notebook"] == "99_example"
    assert loaded["metrics"] == {"accuracy": 0.5, "errors": [1e-9, 2e-9], "framework": "torch"}
    assert json.loads((tmp_path / "metrics" / "99_example.json").read_text()) == loaded


def test_starting_again_drops_the_previous_run():
    report.start("99_example", smoke=False).record(old=1)
    report.start("99_example", smoke=False).record(new=2)
    assert report.load("99_example")["metrics"] == {"new": 2}


@pytest.mark.parametrize("bad", [float("nan"), np.float64("inf")])
def test_non_finite_values_are_refused(bad):
    with pytest.raises(ValueError, match="non-finite"):
        report.start("99_example", smoke=True).record(loss=bad)


def test_loading_a_notebook_that_recorded_nothing_says_so():
    with pytest.raises(FileNotFoundError, match="recorded no metrics"):
        report.load("98_never_ran")


def test_an_optional_part_records_whether_it_ran_and_why_not(capsys):
    r = report.start("99_example", smoke=True)
    assert r.part("load tests", runs=True, because="wrk is not installed") is True
    assert r.part("browser", runs=False, because="no Chromium found (apt-get install chromium)") is False
    assert report.load("99_example")["parts"] == {
        "load tests": {"ran": True}, "browser": {"ran": False, "because": "no Chromium found (apt-get install chromium)"}}
    assert "browser: SKIPPED because no Chromium found (apt-get install chromium)" in capsys.readouterr().out  # says so


def test_a_skipped_part_must_say_why():
    with pytest.raises(ValueError, match="say why"):
        report.start("99_example", smoke=True).part("browser", runs=False, because=None)


def test_a_file_from_before_parts_were_recorded_loads_with_none(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "97_old.json").write_text(json.dumps({"notebook": "97_old", "smoke": True, "metrics": {}}))
    assert report.load("97_old")["parts"] == {}


def test_a_run_by_hand_records_apart_and_leaves_the_course_build_s_figures(tmp_path, monkeypatch):
    report.start("99_example", smoke=False).record(accuracy=0.99)  # what make course measured
    built = (tmp_path / "metrics" / "99_example.json").read_bytes()
    monkeypatch.delenv(report.RECORDED_RUN_VARIABLE)  # JupyterLab: the runner did not start this kernel
    by_hand = report.start("99_example", smoke=True)
    by_hand.record(accuracy=0.5)
    assert (tmp_path / "metrics" / "99_example.json").read_bytes() == built
    assert report.load("99_example")["metrics"] == {"accuracy": 0.99}
    assert report.load("99_example", interactive=True)["metrics"] == {"accuracy": 0.5}
    assert by_hand.path == tmp_path / "metrics" / "interactive" / "99_example.json"
