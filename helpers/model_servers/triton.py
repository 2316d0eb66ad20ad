"""NVIDIA Triton Inference Server: chapter 04's ONNX export in a Triton model repository, served by `tritonserver`.

What a learner writes is in servers/triton/model_repository/: `mnist/config.pbtxt` (the model's tensors, dynamic
batching, two CPU instances, the Python environment) and `mnist/1/model.py` (a Python-backend model whose
`initialize()` opens the ONNX Runtime session and whose `execute()` runs a whole dynamic batch in one call). The
`tritonserver` binary and its Python backend come with the nvidia-pytriton wheel, in Triton's own venv
(build/servers/triton, from servers/triton/requirements.txt: numpy 1.x, which Triton's `pb_utils` needs). That wheel
ships the Python backend only (pytriton/tritonserver/backends/python): no onnxruntime backend, so the model runs
under ONNX Runtime's Python package inside the Python backend's stub processes, one per model instance.

Every start lays out, under the artifacts folder (servers/ is never written):

    <work>/repository/mnist/config.pbtxt     the learner's, with EXECUTION_ENV_PATH made absolute (and without
                                             dynamic_batching when batching=False)
    <work>/repository/mnist/1/model.py       the learner's
    <work>/repository/mnist/1/model.onnx     the export
    <work>/backends/python/                  the Python backend: its library, pb_utils and the stub built for
                                             Python 3.11 (the wheel keeps one stub per Python version apart; PyTriton
                                             copies the right one in place the same way)

The Python environment: the stub process embeds CPython and clears PYTHONPATH, so model.py sees only what the
`EXECUTION_ENV_PATH` parameter of config.pbtxt points to (python_backend README, "Creating Custom Execution
Environments": a conda-pack tarball or an unpacked environment with a `bin/activate`; a venv has one). The stub links
`libpython3.11.so.1.0` and the backend puts `<env>/lib` first on its library path, which holds a conda environment's
libpython but not a venv's: the venv's own interpreter's library directory goes on LD_LIBRARY_PATH, so the stub runs
the same CPython build as the venv's standard library (else the system's libpython 3.11.2 meets pyenv's 3.11.7 stdlib).

Triton binds 127.0.0.1 only: HTTP on `port`, gRPC and metrics on free ports (their defaults are 0.0.0.0:8000-8002).
`--log-info false` keeps warnings and errors (a CPU-only machine logs a few about CUDA, pinned memory and NVML).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from helpers import paths, processes
from helpers.model_servers import common
from helpers.serving.client import infer_request, parse_infer_response
from helpers.serving.protocols import BINARY_HEADER

NAME = "Triton (model repository)"
ENV = "triton"
SOURCE = common.SERVERS_DIR / "triton" / "model_repository"
INFER_PATH = f"/v2/models/{common.MODEL}/infer"
READY_PATH = f"/v2/models/{common.MODEL}/ready"  # the model's own readiness (the server's: /v2/health/ready)
STATS_PATH = f"/v2/models/{common.MODEL}/stats"
PYTHON = "3.11"  # the stub the Python backend runs
VERSION = "2.51.0"  # tritonserver in nvidia-pytriton 0.7.0
EXIT_TIMEOUT_S = 5  # how long tritonserver waits for in-flight requests when stopped (its default: 30)


def missing() -> str | None:
    reason = common.env_missing(ENV)
    return f"{NAME}: {reason}" if reason else None


def encode(images: np.ndarray, binary: bool = False) -> tuple[bytes, dict]:
    """One Open Inference Protocol request; `binary` uses Triton's binary tensor extension both ways."""
    return infer_request(images, "images", binary)


def decode(body: bytes, header_length: str | None = None) -> np.ndarray:
    """The logits of an answer. A binary answer's JSON header length comes in the response header BINARY_HEADER; an
    answer to `encode(..., binary=False)` is JSON and needs none."""
    return parse_infer_response(body, header_length)["outputs"]["logits"]


def site_packages() -> Path:
    return common.ENVS_DIR / ENV / "lib" / f"python{PYTHON}" / "site-packages"


def distribution() -> Path:
    """The Triton server the nvidia-pytriton wheel ships: bin/tritonserver, backends/python, python_backend_stubs."""
    return site_packages() / "pytriton" / "tritonserver"


@lru_cache(maxsize=None)
def interpreter_libdir() -> str:
    """The directory of the venv's interpreter's libpython (its LIBDIR): the stub must load that CPython."""
    result = subprocess.run([str(common.env_python(ENV)), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def server_env() -> dict:
    """What tritonserver (and the stubs it starts) need: the wheel's bundled libraries, the venv's libpython."""
    libs = [interpreter_libdir(), str(site_packages() / "nvidia_pytriton.libs")]
    return {"LD_LIBRARY_PATH": ":".join(libs)}


def model_config(batching: bool) -> str:
    """The learner's config.pbtxt as served: EXECUTION_ENV_PATH absolute; no dynamic_batching if `batching` is False."""
    text = (SOURCE / common.MODEL / "config.pbtxt").read_text()
    env = str(common.ENVS_DIR / ENV)
    text, count = re.subn(r'(key: "EXECUTION_ENV_PATH", value: \{ string_value: )"[^"]*"', rf'\1"{env}"', text)
    if count != 1:
        raise ValueError("servers/triton/model_repository/mnist/config.pbtxt has no EXECUTION_ENV_PATH parameter")
    if not batching:
        text = re.sub(r"^dynamic_batching \{[^}]*\}\n", "", text, flags=re.M)
    return text


def prepare(onnx_dir: Path, work: Path, batching: bool) -> tuple[Path, Path]:
    """The model repository and backend directory tritonserver starts from, in `work` (replaced)."""
    if work.exists():
        shutil.rmtree(work)
    repository, backends = work / "repository", work / "backends"
    version = repository / common.MODEL / "1"
    version.mkdir(parents=True)
    shutil.copy2(SOURCE / common.MODEL / "1" / "model.py", version / "model.py")
    shutil.copy2(Path(onnx_dir) / "model.onnx", version / "model.onnx")
    (repository / common.MODEL / "config.pbtxt").write_text(model_config(batching))
    python = backends / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(distribution() / "backends" / "python" / name, python / name)
    shutil.copy2(distribution() / "python_backend_stubs" / PYTHON / "triton_python_backend_stub", python)
    return repository, backends


def command(repository: Path, backends: Path, port: int, grpc_port: int, metrics_port: int) -> list[str]:
    return [str(distribution() / "bin" / "tritonserver"), "--model-repository", str(repository),
            "--backend-directory", str(backends), "--http-address", "127.0.0.1", "--http-port", str(port),
            "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port), "--metrics-address", "127.0.0.1",
            "--metrics-port", str(metrics_port), "--allow-gpu-metrics", "false", "--log-info", "false",
            "--exit-timeout-secs", str(EXIT_TIMEOUT_S)]


@contextmanager
def running(onnx_dir: Path, batching: bool = True, port: int | None = None):
    """tritonserver serving `onnx_dir`'s model.onnx as `mnist` on 127.0.0.1 until the block ends; yields a `common.Served`."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    port = port or processes.free_port()
    grpc_port, metrics_port = processes.free_port(), processes.free_port()
    work = paths.artifacts() / "model_servers" / f"triton-{port}"
    repository, backends = prepare(onnx_dir, work, batching)
    started = time.monotonic()
    with processes.running(command(repository, backends, port, grpc_port, metrics_port), READY_PATH, "triton", port,
                           env=server_env(), timeout_s=180) as (url, process, log):
        ready_s = time.monotonic() - started
        yield common.Served(
            name=NAME, url=url, infer_path=INFER_PATH, encode=encode, decode=decode, pids=[process.pid], log=log,
            ready_s=ready_s, open_inference=True,
            notes={"version": VERSION, "batching": batching, "max_batch_size": 32,
                   "max_queue_delay_us": 2000 if batching else None, "instances": 2, "grpc_port": grpc_port,
                   "metrics_port": metrics_port, "binary_tensors": True, "binary_header": BINARY_HEADER,
                   "work": str(work)})


def model_statistics(served: common.Served) -> dict:
    """Where the time went, from Triton's statistics extension (GET /v2/models/mnist/stats): per stage, the count and
    the mean in ms (queue: waiting for an instance or for the batch to fill; compute_input/infer/output: copying the
    inputs in, execute(), copying the outputs out), the number of requests (`inference_count`: images, since every
    image is one inference in a batch) and model executions, and how many executions ran at each batch size."""
    import httpx

    answer = httpx.get(served.url + STATS_PATH, headers=served.notes.get("access_headers", {}), timeout=10)
    answer.raise_for_status()
    stats = answer.json()["model_stats"][0]
    stages = {name: {"count": value["count"], "mean_ms": value["ns"] / value["count"] / 1e6 if value["count"] else 0.0}
              for name, value in stats["inference_stats"].items()}
    return {"inference_count": stats["inference_count"], "execution_count": stats["execution_count"],
            "requests": stages["success"]["count"], "failed": stages["fail"]["count"], "stages": stages,
            "batch_sizes": {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]},
            "raw": stats}
