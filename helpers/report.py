"""Record a notebook's key figures to artifacts/metrics/<notebook>.json, for the tests to assert on.

    report = helpers.report.start("01_loss_and_gradients", smoke=SMOKE)
    report.record(final_loss_adam=0.0012)

Every `record` rewrites the file, so figures recorded before a failing cell are kept.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from helpers import paths


def metrics_path(notebook: str) -> Path:
    return paths.metrics_dir() / f"{notebook}.json"


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
        self.path = metrics_path(notebook)
        self.data = {"notebook": notebook, "smoke": bool(smoke), "started_at": time.time(), "metrics": {}}
        self._write()

    def record(self, **metrics) -> None:
        for name, value in metrics.items():
            self.data["metrics"][name] = to_json_value(value)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.path)


def start(notebook: str, smoke: bool) -> Report:
    """Begin a fresh record for `notebook` (drops figures from any earlier run)."""
    return Report(notebook, smoke)


def load(notebook: str) -> dict:
    """What `notebook` recorded: {"notebook", "smoke", "started_at", "metrics"}."""
    path = metrics_path(notebook)
    if not path.exists():
        raise FileNotFoundError(f"{notebook} recorded no metrics ({path} does not exist)")
    return json.loads(path.read_text())
