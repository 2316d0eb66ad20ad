"""The model repository extension of the Open Inference Protocol, for operators: list the repository's versions, load
or unload a model by hand. Spec: Triton's model repository extension, docs/protocol/extension_model_repository.md in
triton-inference-server/server (listed as `model_repository` in GET /v2's extensions).

    POST /v2/repository/index                          every version: name, version, state (READY, ...), reason
    POST /v2/repository/models/<m>/load | /unload      (re)scan the model's folder and serve it, or stop serving it

Behind the API key like inference: unloading a model is an outage.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpers.serving.http import check_model_name, counted, json_response
from helpers.serving.protocols import RequestError
from helpers.serving.repository import ModelNotFound

if TYPE_CHECKING:  # for the annotations only: app.py imports this module
    from helpers.serving.app import Server


def routes(server: Server) -> list[Route]:
    return [counted(server, "repository", "POST", "/v2/repository/index", index),
            counted(server, "repository", "POST", "/v2/repository/models/{model}/{action}", load_or_unload)]


async def index(server: Server, request: Request, labels: dict) -> Response:
    server.authorize(request)
    rows = []
    for model, versions in sorted(dict(server.repository.models).items()):  # a copy: the watcher thread may change it
        for version, state in sorted(versions.items()):
            rows.append({"name": model, "version": str(version), "state": "READY" if state.state == "AVAILABLE" else state.state,
                         "reason": state.error})
    return json_response(rows)


async def load_or_unload(server: Server, request: Request, labels: dict) -> Response:
    server.authorize(request)
    model = labels["model"] = check_model_name(request.path_params["model"])
    action = request.path_params["action"]
    if action not in ("load", "unload"):
        raise RequestError(404, f"no such repository action '{action}'; use load or unload")
    try:
        if action == "load":  # a scan reads, verifies and warms up versions: off the event loop
            await asyncio.get_running_loop().run_in_executor(None, server.repository.load, model)
        else:
            server.repository.unload(model)
    except ModelNotFound as error:
        raise RequestError(404, str(error)) from None
    return json_response({})
