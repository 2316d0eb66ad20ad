"""BentoML: chapter 04's ONNX export behind a `@bentoml.service` class, in BentoML's own venv.

What a learner writes is servers/bentoml/service.py: a class whose `__init__` opens the ONNX Runtime session once per
worker and one `@bentoml.api(batchable=True, max_batch_size=32, ...)` method taking the images as a numpy array. Its
native request is JSON named after the method's parameter, {"images": [[[[...]]]]}, to POST /predict; the answer is
the logits as a JSON list of lists. It does not speak the Open Inference Protocol.

The service and the model are copied into a work folder under the artifacts folder (servers/ is never written) and
served with `bentoml serve service:MnistOnnx --host 127.0.0.1 --port P --working-dir <work>`. BENTOML_DO_NOT_TRACK
turns off BentoML's usage tracking (it would otherwise send events to BentoML's analytics endpoint), and BENTOML_HOME
points into the work folder so nothing is written to ~/bentoml.

Batching: BentoML's adaptive batching (https://docs.bentoml.com/en/latest/guides/adaptive-batching.html) runs in
each worker's dispatcher, so with several workers each batches only its share of the requests. One worker
(`workers=1` in the service): one dispatcher sees all the traffic and one ONNX Runtime session on one thread runs the
batches, as in the other servers of the chapter. `batching=False` sets MNIST_BATCHING=false, which the service reads to
make its endpoint non-batchable.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson

from helpers import paths, processes
from helpers.model_servers import common

NAME = "BentoML"
ENV = "bentoml"
SOURCE = common.SERVERS_DIR / "bentoml"
INFER_PATH = "/predict"
READY_PATH = "/readyz"
MAX_BATCH_SIZE, MAX_LATENCY_MS, WORKERS = 32, 1000, 1  # as in servers/bentoml/service.py


def missing() -> str | None:
    reason = common.env_missing(ENV)
    return f"{NAME}: {reason}" if reason else None


def encode(images: np.ndarray) -> tuple[bytes, dict]:
    """BentoML's native JSON request: the endpoint's parameters by name."""
    body = orjson.dumps({"images": np.ascontiguousarray(images, np.float32)}, option=orjson.OPT_SERIALIZE_NUMPY)
    return body, {"Content-Type": "application/json"}


def decode(body: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(body), np.float32)


def prepare(onnx_dir: Path, work: Path) -> Path:
    """The working directory `bentoml serve` starts in, `work` (replaced): the learner's service.py and the model."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy2(SOURCE / "service.py", work / "service.py")
    shutil.copy2(Path(onnx_dir) / "model.onnx", work / "model.onnx")
    return work


@contextmanager
def running(onnx_dir: Path, batching: bool = True, port: int | None = None):
    """BentoML serving `onnx_dir`'s model.onnx on 127.0.0.1 until the block ends; yields a `common.Served`."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    port = port or processes.free_port()
    work = prepare(onnx_dir, paths.artifacts() / "model_servers" / f"bentoml-{port}")
    command = [str(common.env_python(ENV).parent / "bentoml"), "serve", "service:MnistOnnx", "--host", "127.0.0.1",
               "--port", str(port), "--working-dir", str(work)]
    env = {"BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(work / ".bentoml"),
           "MNIST_BATCHING": "true" if batching else "false", "MNIST_ONNX": str(work / "model.onnx")}
    started = time.monotonic()
    with processes.running(command, READY_PATH, "bentoml", port, env=env, timeout_s=180) as (url, process, log):
        ready_s = time.monotonic() - started
        yield common.Served(
            name=NAME, url=url, infer_path=INFER_PATH, encode=encode, decode=decode, pids=[process.pid], log=log,
            ready_s=ready_s, open_inference=False,
            notes={"version": "1.4.40", "batching": batching, "max_batch_size": MAX_BATCH_SIZE if batching else None,
                   "max_latency_ms": MAX_LATENCY_MS if batching else None, "workers": WORKERS, "work": str(work)})
