"""Record a notebook's key figures to artifacts/metrics/<notebook>.json, for the tests to assert on.

    report = helpers.report.start("01_loss_and_gradients", smoke=SMOKE)
    report.record(final_loss_adam=0.0012)

Every `record` rewrites the file, so figures recorded before a failing cell are kept.

A part that runs only where a program is installed records whether it runs, and why not, before it starts:

    have_wrk = report.part("load tests", runs=loadgen.available(), because="wrk is not installed (apt-get install wrk)")

The notebook's output says so, and the test suite reports every skipped part, with its reason, as a skipped test.

Only a run of the course's runner (`make course`, `make test`; it sets COURSE_RECORDED_RUN) writes the record above.
A chapter run by hand in JupyterLab writes `artifacts/metrics/interactive/<notebook>.json` instead, so opening a chapter
never wipes the figures `make course` measured (the index, the site and the tests read those).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from helpers import paths

RECORDED_RUN_VARIABLE = "COURSE_RECORDED_RUN"  # set by course_tools.runner for the runs whose figures are kept


def is_recorded_run() -> bool:
    """True when the course's runner executes this notebook (make course, make test), False in JupyterLab."""
    return os.environ.get(RECORDED_RUN_VARIABLE) == "1"


def metrics_path(notebook: str, interactive: bool = False) -> Path:
    """The record of `notebook`: the runner's, or (`interactive`) the one a run by hand keeps apart."""
    folder = paths.metrics_dir() / "interactive" if interactive else paths.metrics_dir()
    return folder / f"{notebook}.json"


def to_json_value(value):
    """Plain JSON types from numpy scalars/arrays; refuses NaN and infinity (a metric that is NaN is a bug)."""
    if isinstance(value, np.ndarray):
        return [to_json_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"refusing to record a non-finite value ({value})")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a {type(value).__name__}; record numbers, strings, lists or dicts")


class Report:
    def __init__(self, notebook: str, smoke: bool):
        self.interactive = not is_recorded_run()
        self.path = metrics_path(notebook, interactive=self.interactive)
        self.data = {"notebook": notebook, "smoke": bool(smoke), "started_at": time.time(), "metrics": {}, "parts": {}}
        self._write()
        if self.interactive:
            print(f"This run records its figures in {self.path.relative_to(paths.artifacts().parent)} "
                  "(the course build's, from make course, are kept).")

    def record(self, **metrics) -> None:
        for name, value in metrics.items():
            self.data["metrics"][name] = to_json_value(value)
        self._write()

    def part(self, part: str, runs: bool, because: str | None) -> bool:
        """Record whether the optional `part` runs here and say so; `because` is why it cannot (used when `runs` is
        false). Returns `runs`, for the notebook's `if`."""
        if runs:
            self.ran(part)
        else:
            self.skipped(part, because=because)
        return bool(runs)

    def ran(self, part: str) -> None:
        """Record that the optional `part` runs in this run."""
        self.data["parts"][part] = {"ran": True}
        self._write()
        print(f"{part}: will run")

    def skipped(self, part: str, because: str | None) -> None:
        """Record that the optional `part` is skipped in this run, and why (what is missing and how to install it)."""
        if not because or not str(because).strip():
            raise ValueError(f"say why {part!r} is skipped (what is missing, and how to install it)")
        self.data["parts"][part] = {"ran": False, "because": str(because)}
        self._write()
        print(f"{part}: SKIPPED because {because}")

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.path)


def start(notebook: str, smoke: bool) -> Report:
    """Begin a fresh record for `notebook` (drops figures from any earlier run)."""
    return Report(notebook, smoke)


def load(notebook: str, interactive: bool = False) -> dict:
    """What `notebook` recorded in the runner's last run (`interactive`: in the last run by hand): {"notebook", "smoke",
    "started_at", "metrics", "parts"}; "parts" maps each optional
    part to {"ran": True} or {"ran": False, "because": why}."""
    path = metrics_path(notebook, interactive)
    if not path.exists():
        raise FileNotFoundError(f"{notebook} recorded no metrics ({path} does not exist)")
    recorded = json.loads(path.read_text())
    recorded.setdefault("parts", {})  # a file written before parts were recorded
    return recorded
