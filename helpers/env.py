"""The notebook's first cell: are the pinned versions installed, and seed everything once."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import re
import sys
import warnings
from pathlib import Path

from helpers import paths  # stdlib only at import: `make doctor` uses this module before setup
from helpers.fixes import FIXES

FIX = "Fix: " + FIXES["setup"].fix


# One module from two distributions, one per machine (requirements.txt's markers): TensorFlow's CPU-only build exists
# for Linux x86_64 only, the full build installs the same module `tensorflow` elsewhere. Asking for either name finds
# the one pinned and installed here.
SAME_MODULE = {"tensorflow-cpu": "tensorflow", "tensorflow": "tensorflow-cpu"}


def marker_holds(marker: str, environment: dict[str, str] | None = None) -> bool:
    """A PEP 508 marker made of `==`/`!=` comparisons (and `<`, `<=`, `>`, `>=` of python_version) joined by
    `and`/`or` (all requirements.txt uses), evaluated
    for this machine or for `environment` (stdlib only: `make doctor` runs this before setup)."""
    values = {"sys_platform": sys.platform, "platform_machine": platform.machine(), "platform_system": platform.system(),
              "os_name": os.name, "python_version": "%d.%d" % sys.version_info[:2]} | (environment or {})

    def comparison(text: str) -> bool:
        match = re.fullmatch(r"\s*(\w+)\s*(==|!=|<=|>=|<|>)\s*[\"']([^\"']*)[\"']\s*", text)
        if match is None or match.group(1) not in values or (match.group(2) not in ("==", "!=")
                                                              and match.group(1) != "python_version"):
            raise ValueError(f"requirements.txt: marker {text.strip()!r} is not one this reader understands")
        name, operator, value = match.groups()
        if operator in ("==", "!="):
            return (values[name] == value) == (operator == "==")
        ours, theirs = (tuple(int(part) for part in v.split(".")) for v in (values[name], value))  # 3.13 > 3.9
        return {"<": ours < theirs, "<=": ours <= theirs, ">": ours > theirs, ">=": ours >= theirs}[operator]

    return any(all(comparison(part) for part in re.split(r"\band\b", either)) for either in re.split(r"\bor\b", marker))


def pinned_versions(requirements: Path = paths.REQUIREMENTS, environment: dict[str, str] | None = None) -> dict[str, str]:
    """{distribution name: version} for every `name==version` line of requirements.txt that applies to this machine
    (no marker, or a marker that holds here or in `environment`)."""
    pins = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)==([^\s#;]+)\s*(?:;([^#]*))?", line)
        if match and (not match.group(3) or marker_holds(match.group(3), environment)):
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def normalize(name: str) -> str:
    """PEP 503 name normalization, without extras: 'Scikit_Learn' -> 'scikit-learn'."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def installed_version(name: str) -> str | None:
    """The installed version of `name`, or of the distribution installing the same module here (SAME_MODULE)."""
    for candidate in (name, SAME_MODULE.get(normalize(name))):
        try:
            return importlib.metadata.version(candidate) if candidate else None
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def same_release(installed: str, pinned: str) -> bool:
    """'2.13.0+cpu' is the 2.13.0 pin: a local build tag does not change the release."""
    return installed.split("+")[0] == pinned.split("+")[0]


def check_versions(*names: str, requirements: Path = paths.REQUIREMENTS) -> bool:
    """Print installed vs pinned for `names`; raise if one is missing, warn (with the fix) if one differs."""
    pins = pinned_versions(requirements)
    missing, different = [], []
    print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}")
    for name in names:
        pinned = pins.get(normalize(name)) or pins.get(SAME_MODULE.get(normalize(name), ""))
        if pinned is None:
            raise KeyError(f"{name} is not pinned in {requirements.name}")
        installed = installed_version(name)
        if installed is None:
            status = "MISSING"
            missing.append(name)
        elif not same_release(installed, pinned):
            status = "DIFFERENT"
            different.append(name)
        else:
            status = "ok"
        print(f"  {name:<16} pinned {pinned:<10} installed {installed or '-':<14} {status}")
    if missing:
        raise ImportError(f"Not installed: {', '.join(missing)}. {FIX}")
    if different:
        warnings.warn(f"Versions differ from the pins: {', '.join(different)}. Results may differ from the course's. {FIX}",
                      stacklevel=2)
        return False
    return True


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and, if installed, PyTorch and TensorFlow/Keras: once per notebook."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    try:
        import keras

        keras.utils.set_random_seed(seed)  # seeds Python, NumPy and the TensorFlow backend
    except ImportError:
        pass
