"""Where things live. Every other module asks here instead of building paths itself.

`COURSE_ARTIFACTS` and `COURSE_BUILD` may point elsewhere (tests use this to keep runs apart).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DATA = ROOT / "data"
MNIST_NPZ = DATA / "mnist.npz"
REQUIREMENTS = ROOT / "requirements.txt"
WEB = ROOT / "web"  # the browser demo (chapter 09)
WEB_RUNTIME = WEB / "node_modules" / "onnxruntime-web" / "dist"  # installed by `make setup` with npm, not committed
SWAGGER_UI = WEB / "node_modules" / "swagger-ui-dist"  # Swagger UI for the server's /docs page: the same way


def artifacts() -> Path:
    """Root of everything the notebooks produce (models, exports, metrics, runs)."""
    return Path(os.environ.get("COURSE_ARTIFACTS", ROOT / "artifacts"))


def build() -> Path:
    """Root of executed notebooks, HTML and reports."""
    return Path(os.environ.get("COURSE_BUILD", ROOT / "build"))


def metrics_dir() -> Path:
    return artifacts() / "metrics"


def notebooks() -> list[Path]:
    """The chapters, in reading order (file names start with their number)."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
