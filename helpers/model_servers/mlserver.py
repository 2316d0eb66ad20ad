"""MLServer (Seldon): chapter 04's ONNX export behind a custom inference runtime, in MLServer's own venv.

What a learner writes is in servers/mlserver/: `onnx_runtime.py` (an `MLModel` whose `load()` opens the ONNX Runtime
session and whose `predict()` decodes the Open Inference Protocol tensors with MLServer's NumpyCodec),
`model-settings.json` (the model's name, its runtime, adaptive batching) and `settings.json` (the server). MLServer
reads a folder laid out as a model repository:

    <work>/settings.json                 server-wide: host, ports, inference workers
    <work>/mnist/model-settings.json     the model: runtime, batching, metadata
    <work>/mnist/onnx_runtime.py         the runtime (importable: MLServer puts the model's folder on sys.path)
    <work>/mnist/model.onnx

The work folder lives under the artifacts folder; servers/ is never written. MLServer always opens three ports (REST,
gRPC, Prometheus metrics); each gets a free one. Its settings.json is read as a file, so the ports are written into the
copy rather than passed as MLSERVER_* variables.

Batching: MLServer's adaptive batching (https://docs.seldon.ai/mlserver/user-guide/adaptive-batching) groups up to
`max_batch_size` *requests* (not rows), waiting at most `max_batch_time` seconds, and is on only when
max_batch_size > 1 and max_batch_time > 0; `batching=False` sets both to 0. Workers: `parallel_workers` is 1
(MLServer's default, https://docs.seldon.ai/mlserver/user-guide/parallel-inference): the REST server's event loop
parses requests and batches them in the main process while one inference worker process runs the model, with
ONNX Runtime on one thread; 0 would run the model inside the event loop.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from helpers import paths, processes
from helpers.model_servers import common
from helpers.serving.client import infer_request, parse_infer_response

NAME = "MLServer"
ENV = "mlserver"
SOURCE = common.SERVERS_DIR / "mlserver"
INFER_PATH = f"/v2/models/{common.MODEL}/infer"
READY_PATH = f"/v2/models/{common.MODEL}/ready"
MAX_BATCH_SIZE, MAX_BATCH_TIME_S = 32, 0.002  # as in servers/mlserver/model-settings.json
PARALLEL_WORKERS = 1
DRAIN_S = 3.0  # after the first SIGINT, how long MLServer may take to stop before the second SIGINT forces it


def missing() -> str | None:
    reason = common.env_missing(ENV)
    return f"{NAME}: {reason}" if reason else None


def encode(images: np.ndarray) -> tuple[bytes, dict]:
    """One Open Inference Protocol request, JSON tensors (MLServer's REST server has no binary tensor extension)."""
    return infer_request(images, "images", binary=False)


def decode(body: bytes) -> np.ndarray:
    return parse_infer_response(body, None)["outputs"]["logits"]


def prepare(onnx_dir: Path, work: Path, port: int, grpc_port: int, metrics_port: int, batching: bool) -> Path:
    """The model repository MLServer starts from, in `work` (replaced): the learner's files, the model and the ports."""
    if work.exists():
        shutil.rmtree(work)
    model = work / common.MODEL
    model.mkdir(parents=True)
    shutil.copy2(Path(onnx_dir) / "model.onnx", model / "model.onnx")
    shutil.copy2(SOURCE / "onnx_runtime.py", model / "onnx_runtime.py")
    model_settings = json.loads((SOURCE / "model-settings.json").read_text())
    if not batching:
        model_settings["max_batch_size"], model_settings["max_batch_time"] = 0, 0
    (model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    settings = json.loads((SOURCE / "settings.json").read_text())
    settings.update(http_port=port, grpc_port=grpc_port, metrics_port=metrics_port,
                    metrics_dir=str(work / ".metrics"), environments_dir=str(work / ".envs"))
    (work / "settings.json").write_text(json.dumps(settings, indent=2))
    return work


@contextmanager
def running(onnx_dir: Path, batching: bool = True, port: int | None = None):
    """MLServer serving `onnx_dir`'s model.onnx as `mnist` on 127.0.0.1 until the block ends; yields a `common.Served`."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    port = port or processes.free_port()
    grpc_port, metrics_port = processes.free_port(), processes.free_port()
    work = prepare(onnx_dir, paths.artifacts() / "model_servers" / f"mlserver-{port}", port, grpc_port, metrics_port,
                   batching)
    command = [str(common.env_python(ENV).parent / "mlserver"), "start", str(work)]
    started = time.monotonic()
    with processes.running(command, READY_PATH, "mlserver", port, timeout_s=180) as (url, process, log):
        ready_s = time.monotonic() - started
        try:
            yield common.Served(
                name=NAME, url=url, infer_path=INFER_PATH, encode=encode, decode=decode, pids=[process.pid], log=log,
                ready_s=ready_s, open_inference=True,
                notes={"version": "1.7.1", "batching": batching, "max_batch_size": MAX_BATCH_SIZE if batching else 0,
                       "max_batch_time_s": MAX_BATCH_TIME_S if batching else 0, "parallel_workers": PARALLEL_WORKERS,
                       "grpc_port": grpc_port, "metrics_port": metrics_port, "binary_tensors": False, "work": str(work)})
        finally:
            stop(process)


def stop(process) -> None:
    """Stop MLServer the way it stops well: SIGINT, DRAIN_S to finish, then a second SIGINT (uvicorn's "force quit").

    MLServer 1.7.1 closes its inference pool before its REST server, so a request still in flight when it is told to
    stop (the tail of a load test) never gets its answer and uvicorn waits for it for ever ("Waiting for background
    tasks to complete"): a SIGTERM alone then ends only with the SIGKILL after `processes.stop`'s grace period. Its
    inference workers are in the tree listed before any signal; any still there at the end are stopped here, since
    `processes.running` only looks under a root that is still running."""
    members = processes.tree(process.pid)
    if not members:
        return
    process.send_signal(signal.SIGINT)
    alive = processes.wait_all(members, DRAIN_S, process)
    if alive and process.poll() is None:
        process.send_signal(signal.SIGINT)
        alive = processes.wait_all(alive, DRAIN_S, process)
    if alive:
        processes.stop_all(alive, grace_s=2.0, popen=process)
