"""The course's own server (chapter 06, `python -m helpers.serving`) serving the same export from a model repository.

One process: uvicorn with one event loop, ONNX Runtime with one thread, and (batching=True) chapter 06's batcher:
up to 32 rows per call, waiting at most 2 ms. It speaks the Open Inference Protocol; `binary=True` sends binary tensors.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from helpers import paths
from helpers.model_servers.common import MODEL, Served
from helpers.serving.client import infer_request, parse_infer_response
from helpers.serving.process import free_port, running_server
from helpers.serving.repository import publish

NAME = "the course's server"


def missing() -> str | None:
    for module in ("fastapi", "uvicorn", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            return f"{NAME}: {module} is not installed (`make setup`)"
    return None


def codec(binary: bool):
    """(encode, decode) for Open Inference Protocol requests: JSON, or binary tensors (`binary`)."""

    def encode(images: np.ndarray) -> tuple[bytes, dict]:
        return infer_request(images, "images", binary)

    def decode(body: bytes) -> np.ndarray:
        # a binary answer is a JSON header followed by the tensors' bytes; its length is also in a response header,
        # which decode does not see: latin-1 maps each byte to one character, so the JSON's end is its length in bytes
        _, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
        return parse_infer_response(body, str(end) if end < len(body) else None)["outputs"]["logits"]

    return encode, decode


@contextmanager
def running(onnx_dir: Path, batching: bool = True, port: int | None = None, binary: bool = False, workers: int = 1):
    """The export published as `mnist` version 1 into a repository under artifacts/model_servers/, served on 127.0.0.1
    by `workers` processes (`--workers`: one socket shared by that many server processes, metrics summed over them)."""
    port = port or free_port()
    root = paths.artifacts() / "model_servers" / f"repository-{port}"
    shutil.rmtree(root, ignore_errors=True)
    publish(Path(onnx_dir), root, MODEL, 1)
    encode, decode = codec(binary)
    t0 = time.perf_counter()
    try:
        options = {"workers": workers} if workers > 1 else {}
        with running_server(root, batching=batching, name="course-server", port=port, **options) as server:
            name = NAME if workers == 1 else f"{NAME}, {workers} workers"
            yield Served(name, server.url, f"/v2/models/{MODEL}/infer", encode, decode, [server.pid], server.log,
                         time.perf_counter() - t0, open_inference=True,
                         notes={"batching": batching, "binary": binary, "binary_tensors": True, "workers": workers})
    finally:
        shutil.rmtree(root, ignore_errors=True)
