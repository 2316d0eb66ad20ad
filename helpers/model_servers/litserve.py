"""LitServe (Lightning AI) serving the ONNX export: servers/litserve/server.py, in the course's venv.

LitServe is FastAPI + uvicorn in front of inference worker processes: `python server.py` is a launcher that starts a
multiprocessing manager, `workers` inference processes (spawned; each opens its own ONNX Runtime session) and as many
uvicorn processes (forked; each reads requests and puts them on a queue for the workers). Batching is LitServe's
`max_batch_size`/`batch_timeout` on the LitAPI: a worker takes up to 32 requests from the queue, waiting at most 2 ms.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson

from helpers import processes
from helpers.model_servers.common import SERVERS_DIR, Served

NAME = "LitServe"
SERVER = SERVERS_DIR / "litserve" / "server.py"
MAX_BATCH_SIZE = 32  # as servers/litserve/server.py's default (and chapter 06's batcher): 32 rows, 2 ms


def missing() -> str | None:
    if importlib.util.find_spec("litserve") is None:
        return f"{NAME}: the package litserve is not installed in this venv (requirements.txt pins it; `make setup`)"
    return None


def encode(images: np.ndarray) -> tuple[bytes, dict]:
    """LitServe's native request here: {"images": (N, 1, 28, 28) nested lists}, JSON."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    return orjson.dumps({"images": x}, option=orjson.OPT_SERIALIZE_NUMPY), {"Content-Type": "application/json"}


def decode(body: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(body)["logits"], np.float32)


@contextmanager
def running(onnx_dir: Path, batching: bool = True, port: int | None = None, workers: int = 1):
    """servers/litserve/server.py on 127.0.0.1 with `workers` inference processes (LitServe's workers_per_device;
    LitServe then also starts as many uvicorn processes); `batching=False` sets max_batch_size=1."""
    port = port or processes.free_port()
    batch = MAX_BATCH_SIZE if batching else 1
    command = [sys.executable, str(SERVER), str(Path(onnx_dir) / "model.onnx"), str(port), "--workers", str(workers),
               "--max-batch-size", str(batch)]
    t0 = time.perf_counter()
    with processes.running(command, "/health", "litserve", port) as (url, process, log):
        ready_s = time.perf_counter() - t0
        yield Served(NAME, url, "/predict", encode, decode, [process.pid], log, ready_s,
                     notes={"version": importlib.metadata.version("litserve"), "workers": workers,
                            "max_batch_size": batch, "batch_timeout_s": 0.002 if batching else 0.0,
                            "processes": len(processes.tree(process.pid))})
