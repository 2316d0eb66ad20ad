"""Ray Serve serving the export: chapter 08's deployment (`helpers.ray_serving.model_app`), which speaks the Open
Inference Protocol's JSON at /v2/models/mnist/infer, in a local Ray started by this process (the driver).

Ray's processes (GCS, raylet, the Serve controller, the HTTP proxy, one process per replica, Ray's agents) are this
process's descendants: `Served.pids` are the ones Ray started, whose trees hold every Ray worker. The driver itself
(this process: a notebook's kernel or pytest) is not counted; it sends no request's bytes.
"""

from __future__ import annotations

import importlib.util
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from helpers import processes
from helpers.model_servers.common import MODEL, Served
from helpers.model_servers.course import codec

NAME = "Ray Serve"
NUM_CPUS = 2  # the CPUs Ray may hand out (replicas reserve them); the proxy and the controller reserve none
ROUTE = f"/v2/models/{MODEL}/infer"


def missing() -> str | None:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        return f"{NAME}: ray[serve] is not installed (requirements.txt pins it; `make setup`)"
    return None


def routes_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/routes", timeout=2) as response:
            return response.status == 200 and ROUTE.encode() in response.read()
    except OSError:
        return False


def logs_dir() -> Path:
    """This Ray session's log folder (each Ray process writes its own file there)."""
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path())


@contextmanager
def running(onnx_dir: Path, batching: bool = True, port: int | None = None, replicas: int = 1, haproxy: bool = False,
            max_ongoing_requests: int = 64):
    """Ray (NUM_CPUS CPUs) with Serve's HTTP proxy on 127.0.0.1 and `replicas` replicas of the model, each reserving
    min(1, NUM_CPUS / replicas) CPUs; `batching`: @serve.batch (32 rows, 2 ms). Everything stops when the block ends."""
    import psutil
    import ray
    from ray import serve

    from helpers.ray_serving import model_app, running_ray

    port = port or processes.free_port()
    before = {child.pid for child in psutil.Process().children()}
    t0 = time.perf_counter()
    with running_ray(port, num_cpus=NUM_CPUS, haproxy=haproxy) as url:
        started_s = time.perf_counter() - t0
        app = model_app(Path(onnx_dir), replicas=replicas, batching=batching, max_ongoing_requests=max_ongoing_requests,
                        cpus_per_replica=min(1.0, NUM_CPUS / replicas))
        serve.run(app, name=MODEL, route_prefix=ROUTE)
        deadline = time.monotonic() + 60
        while not routes_ready(url):  # serve.run returns once the replicas are up; the proxy learns the route after
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray Serve's proxy at {url} did not list {ROUTE} within 60 s of serve.run")
            time.sleep(0.05)
        ready_s = time.perf_counter() - t0
        pids = [child.pid for child in psutil.Process().children() if child.pid not in before]
        encode, decode = codec(binary=False)  # chapter 08's deployment reads JSON tensors only
        yield Served(NAME, url, ROUTE, encode, decode, pids, logs_dir(), ready_s, open_inference=True,
                     notes={"version": ray.__version__, "replicas": replicas, "batching": batching, "haproxy": haproxy,
                            "ray_start_s": started_s, "max_ongoing_requests": max_ongoing_requests,
                            "processes": sum(len(processes.tree(pid)) for pid in pids)})
