"""PyTriton: the same model as a Python function that PyTriton binds to a Triton Inference Server it starts itself.

What a learner writes is servers/pytriton/server.py: an ONNX Runtime session per model instance, an `@batch` infer
function, `Triton.bind(...)` with the tensors and `ModelConfig(max_batch_size=32, batcher=DynamicBatcher(...))`, then
`serve()`. It runs in Triton's venv (build/servers/triton). PyTriton writes the model repository itself (a Python-backend
proxy model whose stubs pass each batch over ZeroMQ to the infer function in server.py's process), copies tritonserver
and the stub for this Python into its workspace (a fresh folder under the system temp folder, removed after) and
starts tritonserver in explicit model-control mode, then loads the model: so the readiness polled is the model's.

The venv's interpreter's library directory goes first on LD_LIBRARY_PATH, as for `helpers.model_servers.triton`: the
stub must embed the CPython whose standard library the venv uses (else PyTriton's proxy fails in multiprocessing).

PyTriton restricts Triton's statistics, model-repository, shared-memory, trace and logging endpoints to requests with
a `triton-access-token` header (TritonSecurityConfig; its default token is random): the adapter hands server.py a token
and keeps it in `notes["access_headers"]`, which `model_statistics` sends. Inference and health stay open.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

from helpers import processes
from helpers.model_servers import common, triton

NAME = "PyTriton"
ENV = triton.ENV  # PyTriton runs in Triton's venv
SERVER = common.SERVERS_DIR / "pytriton" / "server.py"
INFER_PATH = triton.INFER_PATH
READY_PATH = triton.READY_PATH
VERSION = "0.7.0"
ACCESS_HEADER = "triton-access-token"  # PyTriton's header for the endpoints it restricts (statistics among them)

encode, decode, model_statistics = triton.encode, triton.decode, triton.model_statistics


def missing() -> str | None:
    reason = common.env_missing(ENV)
    return f"{NAME}: {reason}" if reason else None


START_ATTEMPTS = 2  # PyTriton's second model instance gives the first one's handshake socket 1 s: on a busy machine
# that can run out, the model fails to load and server.py exits; a second start (new ports, new workspace) then loads


@contextmanager
def running(onnx_dir: Path, batching: bool = True, port: int | None = None):
    """PyTriton serving `onnx_dir`'s model.onnx as `mnist` on 127.0.0.1 until the block ends; yields a `common.Served`."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    started = time.monotonic()
    for attempt in range(1, START_ATTEMPTS + 1):
        with ExitStack() as stack:
            try:
                served = stack.enter_context(started_once(onnx_dir, batching, port if attempt == 1 else None))
            except RuntimeError:  # it exited while starting: its log is quoted in the error
                if attempt == START_ATTEMPTS:
                    raise
                continue
            served.ready_s = time.monotonic() - started
            served.notes["start_attempts"] = attempt
            yield served
            return


@contextmanager
def started_once(onnx_dir: Path, batching: bool, port: int | None):
    port = port or processes.free_port()
    grpc_port, metrics_port = processes.free_port(), processes.free_port()
    # short: PyTriton's Unix sockets live in the workspace (a socket path may have 107 characters at most)
    workspace = Path(tempfile.gettempdir()) / f"pytriton-{port}-{uuid.uuid4().hex[:8]}"
    command = [str(common.env_python(ENV)), str(SERVER), str(Path(onnx_dir) / "model.onnx"), str(port), str(grpc_port),
               str(metrics_port), "--workspace", str(workspace), *([] if batching else ["--no-batching"])]
    token = secrets.token_urlsafe(24)  # PyTriton guards the statistics API (and others) with it
    env = {**triton.server_env(), "PYTHONUNBUFFERED": "1", "PYTRITON_ACCESS_TOKEN": token}
    try:
        with processes.running(command, READY_PATH, "pytriton", port, env=env, timeout_s=180) as (url, process, log):
            yield common.Served(
                name=NAME, url=url, infer_path=INFER_PATH, encode=encode, decode=decode, pids=[process.pid], log=log,
                ready_s=0.0, open_inference=True,
                notes={"version": VERSION, "triton_version": triton.VERSION, "batching": batching,
                       "max_batch_size": 32, "max_queue_delay_us": 2000 if batching else None, "instances": 2,
                       "grpc_port": grpc_port, "metrics_port": metrics_port, "binary_tensors": True,
                       "workspace": str(workspace), "access_headers": {ACCESS_HEADER: token}})
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
