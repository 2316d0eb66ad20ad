"""The model repository extension of the Open Inference Protocol, for operators: list the repository's versions, load
or unload a model by hand. Spec: Triton's model repository extension, docs/protocol/extension_model_repository.md in
triton-inference-server/server (listed as `model_repository` in GET /v2's extensions).

    POST /v2/repository/index                          every version: name, version, state (READY, ...), reason
    POST /v2/repository/models/<m>/load | /unload      (re)scan the model's folder and serve it, or stop serving it
    GET  /v2/models/<m>/config                         the configuration in force: its config.json (model_config.py)
                                                       with the server's settings filled in, and a refused file's error
                                                       (Triton's model configuration extension, in this server's terms)
    GET  /v2/models/<m>/shadow                         the shadow comparisons of the answering process: rows that
                                                       agreed or not with its shadow version, the latest disagreements

Behind the API key like inference: unloading a model is an outage. With --workers N, load and unload answer 501:
each worker has a repository of its own, and the request would reach one of them; the index and the config show the
answering worker's view (all scan the same folder). None of them holds up the event loop: an unload
answers at once even while the watcher is loading that model (it drops what it loaded), a load runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpers.serving.http import check_model_name, counted, json_response
from helpers.serving.protocols import RequestError
from helpers.serving.repository import ModelNotFound, config_of

if TYPE_CHECKING:  # for the annotations only: app.py imports this module
    from helpers.serving.app import Server


# Triton's names: READY, UNAVAILABLE (failed, or not loaded: a version outside its model's version policy, with why)
TRITON_STATES = {"AVAILABLE": "READY", "END": "UNAVAILABLE"}


def routes(server: Server) -> list[Route]:
    return [counted(server, "repository", "POST", "/v2/repository/index", index),
            counted(server, "repository", "POST", "/v2/repository/models/{model}/{action}", load_or_unload),
            counted(server, "v2_config", "GET", "/v2/models/{model}/config", model_config),
            counted(server, "v2_shadow", "GET", "/v2/models/{model}/shadow", shadow_report)]


async def index(server: Server, request: Request, labels: dict) -> Response:
    server.authorize(request)
    rows = []
    # on the event loop: a snapshot is read without a lock and without touching the disk, so nothing here can wait
    for model, versions in sorted(server.repository.snapshot().items()):
        reports = server.repository.reports(versions)  # a refused config.json is in every one of its versions' reasons
        for version, state in sorted(versions.items()):
            rows.append({"name": model, "version": str(version), "state": TRITON_STATES.get(state.state, state.state),
                         "reason": reports[version]})
    return json_response(rows)


async def load_or_unload(server: Server, request: Request, labels: dict) -> Response:
    server.authorize(request)
    model = labels["model"] = check_model_name(request.path_params["model"])
    action = request.path_params["action"]
    if action not in ("load", "unload"):
        raise RequestError(404, f"no such repository action '{action}'; use load or unload")
    if server.settings.worker is not None:  # each worker has its own repository: it would (un)load in one of them only
        raise RequestError(501, f"{action} is not available with --workers: it would reach only the worker answering "
                           "this connection. Serve or stop serving a model for every worker through the repository "
                           "itself (its folder, or the version policy of its config.json), or run one worker")
    # Both off the event loop, so health checks and inference answer meanwhile. A load waits for the watcher's scan of
    # the model, if one is running, then reads, verifies and warms up its versions: seconds. An unload only swaps a
    # dictionary, but it may drop the last reference to a backend, and freeing one (a TensorFlow graph) takes a while.
    work = server.repository.load if action == "load" else server.repository.unload
    try:
        await asyncio.to_thread(work, model)
    except ModelNotFound as error:
        raise RequestError(404, str(error)) from None
    return json_response({})


async def model_config(server: Server, request: Request, labels: dict) -> Response:
    """What the model's versions are served with now: after a config.json is written, this changes once the server has
    applied it (on its next scan), which is how a client knows."""
    server.authorize(request)
    model = labels["model"] = check_model_name(request.path_params["model"])
    versions = server.repository.snapshot().get(model)
    if versions is None:
        raise RequestError(404, f"no model '{model}' in the repository")
    config = config_of(versions)
    calls = config.calls.effective(server.settings)
    raw = getattr(versions, "config_raw", None)  # the bytes of the file last read, applied or refused
    return json_response({"name": model, "file": config.path or None, "error": getattr(versions, "config_error", ""),
                          "sha256": None if raw is None else hashlib.sha256(raw).hexdigest(),
                          "version_policy": str(config.policy), "version_labels": config.labels,
                          "traffic_split": dict(config.split), "shadow": config.shadow,
                          "batching": {"enabled": calls.batching, "max_batch_size": calls.max_batch_size,
                                       "max_delay_ms": calls.max_delay_ms},
                          "max_queue": calls.max_queue})


async def shadow_report(server: Server, request: Request, labels: dict) -> Response:
    """What the shadow version answered, compared with the served answers (rollout.Shadow.report). Behind the key: the
    disagreements hold requests' inputs."""
    server.authorize(request)
    model = labels["model"] = check_model_name(request.path_params["model"])
    if model not in server.repository.snapshot():
        raise RequestError(404, f"no model '{model}' in the repository")
    return json_response(server.shadow.report(model))
