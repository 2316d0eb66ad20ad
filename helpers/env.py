"""The notebook's first cell: are the pinned versions installed, and seed everything once."""

from __future__ import annotations

import importlib.metadata
import platform
import random
import re
import warnings
from pathlib import Path

from helpers import paths  # stdlib only at import: `make doctor` uses this module before setup
from helpers.fixes import FIXES

FIX = "Fix: " + FIXES["setup"].fix


def pinned_versions(requirements: Path = paths.REQUIREMENTS) -> dict[str, str]:
    """{distribution name: version} for every `name==version` line of requirements.txt."""
    pins = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)==([^\s#;]+)", line)
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def normalize(name: str) -> str:
    """PEP 503 name normalization, without extras: 'Scikit_Learn' -> 'scikit-learn'."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
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
        pinned = pins.get(normalize(name))
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
        warnings.warn(f"Versions differ from the pins: {', '.join(different)}. Results may differ from the course's. {FIX}")
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
