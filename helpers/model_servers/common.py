"""What every model server of chapter 10 shares: the handle a running server yields, its own venv, one request.

Each server's module (`helpers.model_servers.<name>`) has
    NAME                    how the chapter names it ("Triton (model repository)")
    missing() -> str|None   why it cannot run on this machine (None: it can), e.g. its venv is not built
    running(onnx_dir, batching=True, port=None) -> context manager yielding a `Served`
and the files a learner would write to serve the model with it live in `servers/<name>/` (shown by the chapter).

Every server runs chapter 04's ONNX export with ONNX Runtime on the CPU, one thread inside an operator and one across
operators (`helpers.runtimes.onnx_session_options(threads=1)`, as the course's server does): the servers get their
parallelism from requests, so the comparison is of servers, not of thread settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from helpers import paths

SERVERS_DIR = paths.ROOT / "servers"  # the files a learner writes for each server, and each server's requirements.txt
ENVS_DIR = paths.ROOT / "build" / "servers"  # each server's own venv, made by `make setup` (course_tools.server_envs)
MODEL = "mnist"  # the model's name in every server's URLs


@dataclass
class Served:
    """A model server running on 127.0.0.1, ready. `encode(images) -> (body, headers)` makes one native request for a
    float32 batch in the model's layout (N, 1, 28, 28); `decode(body) -> logits` reads its answer."""

    name: str
    url: str  # http://127.0.0.1:<port>
    infer_path: str  # the native inference route, POST
    encode: Callable[[np.ndarray], tuple[bytes, dict]]
    decode: Callable[[bytes], np.ndarray]
    pids: list[int]  # the processes that serve (their trees are measured for CPU time and memory)
    log: Path
    ready_s: float  # from starting the process(es) to the first 200 on the readiness route
    open_inference: bool = False  # also speaks the Open Inference Protocol at /v2/models/mnist/infer
    notes: dict = field(default_factory=dict)  # what else the adapter learned (versions, batching settings, ...)

    @property
    def infer_url(self) -> str:
        return self.url + self.infer_path


def env_python(name: str) -> Path:
    """The Python of server `name`'s own venv (build/servers/<name>/bin/python)."""
    return ENVS_DIR / name / "bin" / "python"


def env_missing(name: str) -> str | None:
    """Why server `name`'s venv is not usable (None: it is): `make setup` builds it from servers/<name>/requirements.txt."""
    stamp = ENVS_DIR / name / ".installed"
    if not env_python(name).exists() or not stamp.exists():
        return (f"its own venv build/servers/{name}/ is not built (`make setup` builds it from "
                f"servers/{name}/requirements.txt)")
    return None


def env_install_record(name: str) -> dict:
    """What `make setup` measured when it built server `name`'s venv: {"seconds": ..., "bytes": ...} (empty if absent)."""
    record = ENVS_DIR / name / "install.json"
    return json.loads(record.read_text()) if record.exists() else {}
