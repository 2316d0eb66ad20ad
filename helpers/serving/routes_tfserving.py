"""TensorFlow Serving's REST API: model status, metadata and predict. Spec: https://www.tensorflow.org/tfx/serving/api_rest

    GET  /v1/models/<m>[/versions/<v> | /labels/<l>]             status of the model's versions (or of one)
    GET  /v1/models/<m>[/versions/<v> | /labels/<l>]/metadata    the signature: input and output names, types, shapes
    POST /v1/models/<m>[/versions/<v> | /labels/<l>]:predict     {"instances": [...]} (rows) or {"inputs": ...}
                                                                 (columns) (a fast route)
    POST /v1/models/<m>[/versions/<v> | /labels/<l>]:explain     {"instances": [...], "method": ..., "targets": [...],
                                                                 "steps": n}: an attribution map per instance, from the
                                                                 version's explainer (helpers.serving.explainer), the
                                                                 verb KServe's v1 protocol defines beside :predict

TF Serving puts the verb after a colon in the last segment (`mnist:predict`), which a path template cannot split from
the model name, so each route takes the whole rest of the path and V1_PATH parses it. (The :classify and :regress verbs
are not served: this server's models are plain predict signatures.)

Labels come from the model's config.json (`version_labels`, as in TF Serving's ModelServerConfig). TF Serving refuses
a config whose label names a version not loaded (unless --allow_version_labels_for_unavailable_models); this server
accepts it (the version may still be loading) and answers each request for the label as the version would: 404 if
that version is not loaded (not on disk, or outside the version policy), 503 if it failed to load, each message naming
the label and the version. :explain is counted under its own endpoint name, v1_explain. The Open Inference Protocol names versions by strings: its routes take a label in place of
a version number (routes_v2). A :predict naming neither a version nor a label goes where the model's traffic split sends
it (helpers.serving.rollout).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpers.serving import explainer, protocols
from helpers.serving.http import FastRoute, check_model_name, counted, json_response, parse_version
from helpers.serving.protocols import RequestError
from helpers.serving.repository import ModelNotFound, labelled

if TYPE_CHECKING:  # for the annotations only: app.py imports this module
    from helpers.serving.app import Server

V1_PATH = re.compile(r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                     r"(?::(?P<verb>\w+)|/(?P<metadata>metadata))?$")


def routes(server: Server) -> list[Route]:
    return [counted(server, "v1_status", "GET", "/v1/models/{path:path}", status),
            counted(server, "v1_predict", "POST", "/v1/models/{path:path}", predict, kind=FastRoute)]


def match_v1(path: str):
    if ".." in path or path.startswith("/"):
        raise RequestError(400, f"invalid model name in {path[:64]!r}")
    return V1_PATH.match(path)


async def status(server: Server, request: Request, labels: dict) -> Response:
    """The status of the model's versions, or its metadata (the same route: see the module docstring)."""
    server.authorize(request)
    path = request.path_params["path"]
    match = match_v1(path)
    if not match or match["verb"]:
        raise RequestError(404, f"no such endpoint: GET /v1/models/{path[:100]}")
    model, version, label = check_model_name(match["model"]), parse_version(match["version"]), match["label"]
    labels["model"] = model
    if match["metadata"]:
        state = server.lookup(model, version, label)
        return json_response(protocols.tfs_metadata(model, state.version, state.backend))
    try:
        versions = server.repository.entry(model)  # one read: the versions and the config that labels them
        if label is not None:
            version = labelled(model, versions, label)
    except ModelNotFound as error:
        raise RequestError(404, str(error)) from None
    reports = server.repository.reports(versions)
    if version is not None:
        if version not in versions:
            named = f"label '{label}' names version {version}, which is not loaded" if label else f"has no version {version}"
            raise RequestError(404, f"model '{model}' {named}")
        versions = {version: versions[version]}
    return json_response(protocols.tfs_status(versions, reports))  # every version, failed ones too, as TF Serving does


async def predict(server: Server, request: Request, labels: dict) -> Response:
    client = server.authorize(request)
    path = request.path_params["path"]
    match = match_v1(path)
    if not match or match["metadata"] or match["verb"] is None:
        raise RequestError(404, f"no such endpoint: POST /v1/models/{path[:100]}")
    if match["verb"] == "explain":
        return await explain(server, request, labels, client, match)
    if match["verb"] != "predict":
        raise RequestError(400, f"method ':{match['verb']}' is not supported here; use ':predict' or ':explain'")
    model, version = check_model_name(match["model"]), parse_version(match["version"])
    labels["model"] = model
    server.limit(request, client, model)  # an empty bucket is refused before the body is read
    document = protocols.parse_json(await server.read_body(request))
    state, shadow = server.target(model, version, match["label"], request)
    labels["version"] = str(state.version)
    x, layout = protocols.tfs_inputs(document, state.backend.input, server.settings.max_batch_size)
    server.limit(request, client, model, len(x))  # one token per instance
    y = await server.infer(model, state, x, shadow)
    return Response(protocols.tfs_response(y, layout), media_type="application/json")


async def explain(server: Server, request: Request, labels: dict, client: str | None, match) -> Response:
    """:explain: {"instances": [...]} as for :predict (rows only), and optionally "method" (explainer.METHODS),
    "targets" (a class per instance; default: its top class) and "steps" (Integrated Gradients' steps). Answers
    {"method": ..., "explanations": [{"target": class, "attributions": map shaped like the instance, "delta": ...}]}:
    `delta` (Integrated Gradients only) is how far the map's sum is from the change of the target's score between the
    baseline and the instance, the method's completeness check."""
    labels["endpoint"] = "v1_explain"
    model, version = check_model_name(match["model"]), parse_version(match["version"])
    labels["model"] = model
    if server.settings.top_class_only:  # a map is a gradient: it would give away what top-class answers withhold
        raise RequestError(403, "this server answers top classes only (--top-class-only), so it gives no explanations: "
                                "an attribution map reveals the model's gradients")
    server.limit(request, client, model)
    document = protocols.parse_json(await server.read_body(request))
    state, _ = server.target(model, version, match["label"], request)  # explanations are never shadowed
    labels["version"] = str(state.version)
    if state.backend.explainer is None:
        raise RequestError(400, f"model '{model}' version {state.version} ships no explainer, so it cannot be "
                                f"explained; add one to its export with helpers.serving.explainer.add_explainer")
    if "inputs" in document:
        raise RequestError(400, "an explain request takes 'instances' (row format) only")
    extra = sorted(set(document) - {"instances", "method", "targets", "steps", "signature_name"})
    if extra:
        raise RequestError(400, f"unknown field {extra[0]!r} in an explain request; it takes 'instances', 'method', "
                                "'targets' and 'steps'")
    x, _ = protocols.tfs_inputs({"instances": document.get("instances")}, state.backend.input,
                                server.settings.max_explain_instances)
    method, targets, steps = explain_options(document, len(x), state.backend.output.shape[-1])
    server.limit(request, client, model, len(x))
    explanation = await server.explain(model, state, x, method, targets, steps)
    return Response(protocols.explain_response(method, explanation), media_type="application/json")


def explain_options(document: dict, rows: int, classes: int) -> tuple[str, list[int] | None, int]:
    method = document.get("method", explainer.DEFAULT_METHOD)
    if method not in explainer.METHODS:
        raise RequestError(400, f"unknown method {str(method)[:40]!r}; use one of {', '.join(explainer.METHODS)}")
    targets = document.get("targets")
    if targets is not None:
        if (not isinstance(targets, list) or len(targets) != rows
                or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < classes for t in targets)):
            raise RequestError(400, f"'targets' must be a list of {rows} class numbers (one per instance), each 0 to "
                                    f"{classes - 1}")
    steps = document.get("steps", 32)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 2 <= steps <= explainer.MAX_STEPS:
        raise RequestError(400, f"'steps' must be an integer from 2 to {explainer.MAX_STEPS}, got {str(steps)[:20]}")
    return method, targets, steps
