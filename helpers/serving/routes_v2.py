"""The Open Inference Protocol, REST flavour (KServe v2, also spoken by Triton and MLServer): health, metadata and
inference. Spec: https://github.com/kserve/open-inference-protocol (specification/protocol/inference_rest.md); the
binary tensors of /infer follow Triton's binary tensor data extension (docs/protocol/extension_binary_data.md in
triton-inference-server/server).

    GET  /v2/health/live                         the process answers (no key: for probes)
    GET  /v2/health/ready                        every model has a version to serve (no key); with --workers N,
                                                 in the worker that answers (the kernel picks one per connection)
    GET  /v2                                     server name, version, extensions
    GET  /v2/models/<m>[/versions/<v>]           model metadata: versions, platform, input and output tensors
    GET  /v2/models/<m>[/versions/<v>]/ready     200 if that version can answer, 400 if loaded but not ready
    POST /v2/models/<m>[/versions/<v>]/infer     inference, JSON tensors or binary ones (a fast route)

`<v>` is a version number or one of the model's version labels (its config.json's `version_labels`: stable, canary):
the protocol's versions are strings, and a label is never mistaken for a number. Without /versions/<v>, an inference
goes where the model's traffic split sends it (the latest available version if it has none; helpers.serving.rollout),
and a copy to its shadow version if it names one; metadata and readiness describe the latest available version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpers.serving import protocols
from helpers.serving.http import (
    SERVER_NAME,
    SERVER_VERSION,
    FastRoute,
    check_model_name,
    counted,
    json_response,
    parse_version_or_label,
    route,
)
from helpers.serving.protocols import RequestError

if TYPE_CHECKING:  # for the annotations only: app.py imports this module
    from helpers.serving.app import Server

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]  # the last two: routes_repository


def routes(server: Server) -> list[Route]:
    health = [route(server, "GET", "/v2/health/live", live), route(server, "GET", "/v2/health/ready", ready),
              route(server, "GET", "/v2", server_metadata)]
    models = []
    for model in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):  # the latest version, or a given one
        models += [counted(server, "v2_metadata", "GET", model, model_metadata),
                   counted(server, "v2_ready", "GET", f"{model}/ready", model_ready),
                   counted(server, "v2_infer", "POST", f"{model}/infer", infer, kind=FastRoute)]
    return health + models


async def live(server: Server, request: Request) -> Response:
    return json_response({"live": True})


async def ready(server: Server, request: Request) -> Response:
    ok = server.repository.ready()
    return json_response({"ready": ok}, 200 if ok else 400)  # the protocol: 200 means ready, 4xx not


async def server_metadata(server: Server, request: Request) -> Response:
    return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


def requested(server: Server, request: Request, labels: dict):
    """The key check, then the version state the path names; labels the metrics with model and version."""
    server.authorize(request)
    model = labels["model"] = check_model_name(request.path_params["model"])
    state = server.lookup(model, *parse_version_or_label(request.path_params.get("version")))
    labels["version"] = str(state.version)
    return model, state


async def model_metadata(server: Server, request: Request, labels: dict) -> Response:
    model, state = requested(server, request, labels)
    available = [v for v, s in server.repository.versions(model).items() if s.state == "AVAILABLE"]
    return json_response(protocols.v2_metadata(model, sorted(available), state.backend))


async def model_ready(server: Server, request: Request, labels: dict) -> Response:
    try:
        requested(server, request, labels)
    except RequestError as error:
        if error.status != 503:  # unknown model or version: 404, bad name or version: 400, no key: 401
            raise
        return json_response({"name": labels["model"], "ready": False}, 400)  # the protocol: not ready is a 4xx
    return json_response({"name": labels["model"], "ready": True})


async def infer(server: Server, request: Request, labels: dict) -> Response:
    client = server.authorize(request)
    model = labels["model"] = check_model_name(request.path_params["model"])
    server.limit(request, client, model)  # an empty bucket is refused before the body is read
    body = await server.read_body(request)
    header, binary = protocols.split_binary(body, request.headers.get(protocols.BINARY_HEADER))
    document = protocols.parse_json(header)
    state, shadow = server.target(model, *parse_version_or_label(request.path_params.get("version")), request)
    labels["version"] = str(state.version)
    x = protocols.v2_inputs(document, binary, state.backend.input, server.settings.max_batch_size)
    binary_out = protocols.v2_wants_binary(document, state.backend.output)
    server.limit(request, client, model, len(x))  # one token per instance
    y = await server.infer(model, state, x, shadow)
    content, headers = protocols.v2_response(document, model, state.version, state.backend.output, y, binary_out)
    return Response(content, headers=headers, media_type="application/octet-stream" if binary_out else "application/json")
