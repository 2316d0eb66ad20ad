"""The server's OpenAPI 3.1 document, served at /openapi.json, and Swagger UI at /docs: every route the server answers,
with the request and response schemas of both protocols, so that an API tool pointed at /openapi.json can exercise
them and a learner can try each one from the browser.

FastAPI writes such a document by itself only for its own endpoints (APIRoute), and this server's routes are plain
Starlette routes (most of them fast routes that skip the framework: see app.FastPath), so the document is written here,
by hand, as plain JSON-schema dicts. It is built from the server's settings (the body limit and batch size in the
descriptions, the demo's routes with --demo) and from nothing in the repository: it names no model the server holds.

    GET /openapi.json                      this document
    GET /docs                              Swagger UI, reading /openapi.json
    GET /docs/assets/swagger-ui-bundle.js  Swagger UI's JavaScript and CSS, the only files the page loads, from
    GET /docs/assets/swagger-ui.css        web/node_modules/swagger-ui-dist (installed by `make setup`, never a CDN)

All are open, even when the server has an API key. TF Serving, Triton and KServe keep model metadata behind their
authentication when it is on, and this server does too (GET /v2/models/<m>, /v1/models/<m>/metadata need the key):
metadata tells which models exist and what they take. This document tells neither: it describes the two protocols,
which are public specifications, plus this server's limits. And the page at /docs fetches it with a plain browser
request, before anyone can type a key into its Authorize button; behind the key the page would show an error instead
of the API. The operations themselves stay behind the key: the document marks them (`security`), and Swagger UI sends
the key entered under Authorize with each of them.

Offline: nothing here needs a network. /openapi.json needs nothing beyond this module. The /docs page loads Swagger
UI's JavaScript and CSS from this server, not from a CDN (FastAPI's default is jsDelivr): they are the files of the
swagger-ui-dist npm package, pinned in web/package.json beside the browser demo's runtime and installed by `make setup`
(`npm ci --prefix web`; `make wheelhouse` carries them to an offline classroom), read from paths.SWAGGER_UI when asked
for. Each is one route of its own, for that one file: no other file of the package, no way out of its folder.
Everything else the page shows (icons, images) is inside those two files, and its favicon is empty (no request).
Where npm was absent at setup, /docs still answers 200: a page that says Swagger UI is not installed, with the fix
(helpers/fixes.py) and a link to /openapi.json; the two asset routes answer 404 with the same fix. Installing the
package needs no restart: reload /docs.

Where to look when the server changes: an operation is one entry of `operations()`; the shapes its bodies take are
`SCHEMAS`; the errors it can answer are `ERRORS`, as Server.respond, Server.infer, Server.limit, RetryLater and
TooManyRequests (app.py) produce them. tests/test_openapi.py checks the document against the server: every route it answers is documented, every
documented operation is answered, and every example succeeds and matches its response schema.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import orjson
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from helpers import paths
from helpers.fixes import FIXES, with_fix
from helpers.serving.http import SERVER_NAME, SERVER_VERSION, json_response, route
from helpers.serving.model_config import LABEL
from helpers.serving.protocols import BINARY_HEADER, V2_DATATYPES
from helpers.serving.repository import NAME, VERSION
from helpers.serving.routes_v2 import EXTENSIONS

if TYPE_CHECKING:  # for the annotations only: app.py imports this module
    from helpers.serving.app import Server, Settings

OPENAPI_URL, DOCS_URL = "/openapi.json", "/docs"
TITLE = f"{SERVER_NAME} inference server"
# Swagger UI's files the page loads, by name in paths.SWAGGER_UI, with their media types: one route each, nothing else
SWAGGER_UI_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
ASSETS_URL = f"{DOCS_URL}/assets"
SWAGGER_JS_URL, SWAGGER_CSS_URL = (f"{ASSETS_URL}/{name}" for name in SWAGGER_UI_FILES)
MISSING_SWAGGER_UI = with_fix(FIXES["swagger-ui"].symptom, "swagger-ui")  # two lines: what is missing, the fix

# TF Serving's version labels: `/labels/<label>` in place of `/versions/<v>`, a name an operator points at a version
# (stable, canary). Kept in a list of their own: which labels exist is the repository's business, and the test of the
# document counts these paths as served only once the server answers them.
LABEL_BASE = "/v1/models/{model}/labels/{label}"
LABEL_PATHS = (LABEL_BASE, f"{LABEL_BASE}/metadata", f"{LABEL_BASE}:predict", f"{LABEL_BASE}:explain")


def routes(server: Server) -> list[Route]:
    document = orjson.dumps(build(server.settings))  # built once: it depends on the settings only

    async def openapi_json(server: Server, request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def docs(server: Server, request: Request) -> Response:
        if not swagger_ui_installed():
            return HTMLResponse(not_installed_page())
        return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=TITLE, swagger_js_url=SWAGGER_JS_URL,
                                   swagger_css_url=SWAGGER_CSS_URL,
                                   swagger_favicon_url="data:,",  # no favicon: no request for one anywhere
                                   swagger_ui_parameters={"validatorUrl": None})  # no badge from validator.swagger.io

    def asset(name: str, media_type: str):
        async def swagger_ui_file(server: Server, request: Request) -> Response:
            file = paths.SWAGGER_UI / name  # looked up now: installing the package needs no restart
            if not file.is_file():
                return json_response({"error": MISSING_SWAGGER_UI}, 404)
            # no-cache: revalidated (a 304 when unchanged), since the URL stays the same when the pinned version changes
            return FileResponse(file, media_type=media_type, headers={"Cache-Control": "no-cache"})

        return swagger_ui_file

    return [route(server, "GET", OPENAPI_URL, openapi_json), route(server, "GET", DOCS_URL, docs),
            *[route(server, "GET", f"{ASSETS_URL}/{name}", asset(name, media_type))
              for name, media_type in SWAGGER_UI_FILES.items()]]


def swagger_ui_installed() -> bool:
    return all((paths.SWAGGER_UI / name).is_file() for name in SWAGGER_UI_FILES)


def not_installed_page() -> str:
    """/docs without Swagger UI's files: what is missing, the fix, and the document itself, with nothing to load."""
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in MISSING_SWAGGER_UI.splitlines())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>'
            '<link rel="icon" href="data:,"></head><body>'
            f"<h1>{html.escape(TITLE)}: Swagger UI is not installed</h1>{lines}"
            f'<p>The OpenAPI document works without it: <a href="{OPENAPI_URL}">{OPENAPI_URL}</a> (read it, or open it '
            "in any OpenAPI tool).</p></body></html>")


# --------------------------------------------------------------------------- JSON schemas: building blocks


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict, required=(), description: str | None = None, **more) -> dict:
    schema = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def array(items: dict, description: str | None = None, **more) -> dict:
    return {"type": "array", "items": items, **({"description": description} if description else {}), **more}


STRING, NUMBER, BOOLEAN = {"type": "string"}, {"type": "number"}, {"type": "boolean"}
NULLABLE_STRING = {"type": ["string", "null"]}
SHAPE = array({"type": "integer", "minimum": 0}, "the tensor's dimensions, the batch first")

# The course's MNIST model as chapter 06 serves it: input "images", one 28 x 28 x 1 image scaled to [0, 1]
EXAMPLE_INPUT, EXAMPLE_SHAPE = "images", [1, 28, 28, 1]
IMAGE = [[[0.0]] * 28] * 28  # one blank image, 28 x 28 x 1

SCHEMAS = {
    "Error": obj({"error": STRING}, ["error"], "Every error, in both protocols: what is wrong, in words."),
    "NumberArray": array({"anyOf": [NUMBER, ref("NumberArray")]}, "JSON numbers, as a flat or nested array "
                         "(not numbers in quotes, not true/false; NaN and infinity are not JSON)"),
    "Empty": obj({}, maxProperties=0, description="An empty object: done."),
    # ----- Open Inference Protocol (KServe v2)
    "V2Live": obj({"live": BOOLEAN}, ["live"]),
    "V2Ready": obj({"ready": BOOLEAN}, ["ready"]),
    "V2ModelReady": obj({"name": STRING, "ready": BOOLEAN}, ["name", "ready"]),
    "V2ServerMetadata": obj({"name": STRING, "version": STRING, "extensions": array(STRING)},
                            ["name", "version", "extensions"]),
    "V2TensorMetadata": obj({"name": STRING, "datatype": STRING,
                             "shape": array({"type": "integer"}, "-1 for the batch dimension")},
                            ["name", "datatype", "shape"]),
    "V2ModelMetadata": obj({"name": STRING, "versions": array(STRING, "the versions available"), "platform": STRING,
                            "inputs": array(ref("V2TensorMetadata")), "outputs": array(ref("V2TensorMetadata"))},
                           ["name", "versions", "platform", "inputs", "outputs"]),
    "V2InferInput": obj(
        {"name": STRING, "shape": SHAPE, "datatype": {"type": "string", "enum": sorted(V2_DATATYPES)},
         "data": ref("NumberArray"),
         "parameters": obj({"binary_data_size": {"type": "integer", "minimum": 0, "description":
                            "the tensor is sent as this many raw bytes after the JSON (binary tensor extension)"}})},
        ["name", "shape", "datatype"], "One input tensor: its values in `data`, or as binary data after the JSON "
        "(`parameters.binary_data_size`), not both."),
    "V2RequestedOutput": obj({"name": STRING, "parameters": obj({"binary_data": {
        "type": "boolean", "description": "send this output as binary data (overrides binary_data_output)"}})}, ["name"]),
    "V2InferRequest": obj(
        {"id": {"type": "string", "description": "echoed in the response"},
         "parameters": obj({"binary_data_output": {"type": "boolean", "default": False, "description":
                            "send every output as binary data after the JSON"}}),
         "inputs": array(ref("V2InferInput"), "exactly one tensor: the model's input", minItems=1, maxItems=1),
         "outputs": array(ref("V2RequestedOutput"), "the outputs wanted (the model has one); all by default")},
        ["inputs"]),
    "V2InferOutput": obj(
        {"name": STRING, "datatype": {"type": "string", "const": "FP32"}, "shape": SHAPE,
         "data": array(NUMBER, "the values, flat, in row-major order"),
         "parameters": obj({"binary_data_size": {"type": "integer", "minimum": 0}})},
        ["name", "datatype", "shape"], "One output tensor: `data`, or `parameters.binary_data_size` raw bytes after "
        "the JSON when binary data was asked for."),
    "V2InferResponse": obj({"model_name": STRING, "model_version": STRING, "id": STRING,
                            "outputs": array(ref("V2InferOutput"))}, ["model_name", "model_version", "outputs"]),
    # ----- TensorFlow Serving REST
    "TFSPredictRequest": {
        **obj({"signature_name": {"type": "string", "enum": ["", "serving_default"], "default": "serving_default"},
               "instances": array({"anyOf": [NUMBER, ref("NumberArray"), {"type": "object", "additionalProperties":
                                   ref("NumberArray"), "description": "a named instance: {input name: values}"}]},
                                  "row format: one entry per instance", minItems=1),
               "inputs": {"anyOf": [ref("NumberArray"), {"type": "object", "additionalProperties": ref("NumberArray"),
                                                        "description": "{input name: the whole batch}"}],
                          "description": "columnar format: the whole batch at once"}}),
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
        "description": "Exactly one of `instances` (answered with `predictions`) or `inputs` (answered with `outputs`)."},
    "TFSPredictResponse": {**obj({"predictions": ref("NumberArray"), "outputs": ref("NumberArray")}),
                           "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}]},
    "TFSExplainRequest": obj(
        {"instances": array(ref("NumberArray"), "row format: one entry per instance", minItems=1),
         "method": {"type": "string", "enum": ["saliency", "integrated_gradients", "occlusion"],
                    "default": "integrated_gradients"},
         "targets": array({"type": "integer", "minimum": 0}, "the class each map explains, one per instance "
                          "(default: the instance's top class)"),
         "steps": {"type": "integer", "minimum": 2, "maximum": 256, "default": 32,
                   "description": "Integrated Gradients' steps along the path from the baseline (black) image"}},
        ["instances"], "Instances to explain, as for :predict's row format (no columnar format)."),
    "TFSExplainResponse": obj(
        {"method": STRING, "explanations": array(obj(
            {"target": {"type": "integer"}, "attributions": ref("NumberArray"),
             "delta": {**NUMBER, "description": "Integrated Gradients only: the map's sum minus the change of the "
                                                "target's score from the baseline (completeness: near 0)"}},
            ["target", "attributions"]), "one per instance, each map shaped like its instance")},
        ["method", "explanations"]),
    "TFSModelStatus": obj({"model_version_status": array(obj(
        {"version": STRING, "state": {"type": "string", "enum": ["AVAILABLE", "END"], "description":
                                      "END: the version failed to load (its error in status)"},
         "status": obj({"error_code": STRING, "error_message": NULLABLE_STRING}, ["error_code", "error_message"])},
        ["version", "state", "status"]), "newest version first")}, ["model_version_status"]),
    "TFSModelMetadata": obj({"model_spec": obj({"name": STRING, "signature_name": STRING, "version": STRING},
                                               ["name", "signature_name", "version"]),
                             "metadata": obj({"signature_def": {"type": "object", "description":
                                              "TF Serving's SignatureDefMap: serving_default's inputs and outputs"}},
                                             ["signature_def"])}, ["model_spec", "metadata"]),
    # ----- model repository and model configuration extensions
    "ModelConfig": obj({"name": STRING, "file": NULLABLE_STRING, "error": STRING,
                        "sha256": {**NULLABLE_STRING, "description": "of the config.json last read (applied or refused)"},
                        "version_policy": {"type": "string", "description": "all, latest N or specific [versions]"},
                        "version_labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "traffic_split": {"type": "object", "additionalProperties": NUMBER, "description":
                                          "percent of the requests naming no version, by label ({}: all to the latest)"},
                        "shadow": {**NULLABLE_STRING, "description": "the label whose version gets a copy of them"},
                        "batching": obj({"enabled": BOOLEAN, "max_batch_size": {"type": "integer"},
                                         "max_delay_ms": NUMBER}, ["enabled", "max_batch_size", "max_delay_ms"]),
                        "max_queue": {"type": "integer", "description": "0: no bound"}},
                       ["name", "file", "error", "sha256", "version_policy", "version_labels", "traffic_split", "shadow",
                        "batching", "max_queue"],
                       "The configuration in force: the model's config.json (null: none) with the server's settings "
                       "filled in; `error` is why a newer config.json was refused (the one in force stays)."),
    "ShadowReport": obj({"name": STRING, "comparisons": array(obj(
        {"served_version": {"type": "integer"}, "shadow_version": {"type": "integer"},
         "outcome": {"type": "string", "enum": ["agree", "disagree", "error", "dropped"]}, "rows": {"type": "integer"}},
        ["served_version", "shadow_version", "outcome", "rows"])), "disagreements": array(obj(
            {"input": ref("NumberArray"), "input_shape": array({"type": "integer"}),
             "served": obj({"version": {"type": "integer"}, "class": {"type": "integer"}}, ["version", "class"]),
             "shadow": obj({"version": {"type": "integer"}, "class": {"type": "integer"}}, ["version", "class"])},
            ["input", "input_shape", "served", "shadow"]), "the latest, newest last")},
        ["name", "comparisons", "disagreements"], "This process's comparisons of the served answers with its shadow "
        "version's (with --workers N, the answering worker's)."),
    "RepositoryIndex": array(obj({"name": STRING, "version": STRING, "state": {"type": "string", "description":
                                  "READY, or why not (e.g. UNAVAILABLE)"}, "reason": NULLABLE_STRING},
                                 ["name", "version", "state", "reason"])),
}


# --------------------------------------------------------------------------- the errors, as the server answers them


def error(description: str, headers: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}},
            **({"headers": headers} if headers else {})}


ERRORS = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound", "413": "TooLarge", "429": "RateLimited",
          "500": "InferenceFailed", "503": "Unavailable", "504": "Timeout"}  # status -> its entry in components.responses
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def errors(settings: Settings) -> dict:
    """components.responses: every error answer, by the name in ERRORS."""
    return {ERRORS[status]: answer for status, answer in {
        "400": error("Bad request: malformed JSON, wrong shape or type, values outside [0, 1], an invalid model name "
                     f"or version, a batch over {settings.max_batch_size} instances"
                     + (f" (or over the rate limit's burst, {settings.burst()})." if settings.rate_limit else ".")),
        "401": error("Missing or invalid API key (only when the server has one).",
                     {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}),
        "403": error("Refused by the server's settings: :explain on a server that answers top classes only."),
        "404": error("No such model or version (or no such path)."),
        "413": error(f"The request body exceeds the server's limit of {settings.max_body_bytes:,} bytes."),
        "429": error(rate_limit_text(settings), RETRY_AFTER),
        "500": error("The model failed on valid inputs (logged by the server)."),
        "503": error("Not served now. With Retry-After: the request was shed, not run (the version's queue was full, "
                     "or the version was replaced or unloaded before it could run), and a retry can succeed. "
                     "Without: the model has no version available yet.", RETRY_AFTER),
        "504": error(f"The inference took longer than the server's {settings.request_timeout_s} s timeout."),
    }.items()}


def rate_limit_text(settings: Settings) -> str:
    """The 429's description: the rate limit in force, or that there is none (the document is the same shape with and
    without --rate-limit, so that a client written against one works against the other)."""
    limit = (f"This server's: {settings.rate_limit:g} instances per second, bursts of {settings.burst()}."
             if settings.rate_limit else "This server has none (start it with --rate-limit to set one).")
    return ("Too many requests: the client's rate limit (per API key, or per address without keys; one token per "
            "instance) has no tokens left for this request, which was not run and cost nothing. Retry after the "
            f"Retry-After seconds. {limit}")


# --------------------------------------------------------------------------- operations


PARAMETERS = {
    "model": {"name": "model", "in": "path", "required": True, "example": "mnist",
              "schema": {"type": "string", "pattern": NAME.pattern}},
    "version": {"name": "version", "in": "path", "required": True, "example": "1", "description": "a version number",
                "schema": {"type": "string", "pattern": f"^{VERSION.pattern}$"}},
    "v2_version": {"name": "version", "in": "path", "required": True, "example": "1",
                   "description": "a version number, or one of the model's version labels (stable, canary)",
                   "schema": {"type": "string", "pattern": f"^(?:{VERSION.pattern}|{LABEL.pattern[1:-1]})$"}},
    "routing_key": {"name": "X-Routing-Key", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "with a traffic split (the model's config.json): the same key is always routed to "
                                   "the same label (sticky assignment); without one, each request is drawn at random"},
    "label": {"name": "label", "in": "path", "required": True, "example": "stable",
              "description": "a version label: a name an operator gives a version (stable, canary)",
              "schema": {"type": "string"}},
    "binary_header": {"name": BINARY_HEADER, "in": "header", "required": False, "schema": {"type": "integer"},
                      "description": "binary tensor extension: the length of the JSON part of the body; the rest is "
                                     "the inputs' raw little-endian bytes"},
}
SECURED = [{"bearer": []}, {"apiKey": []}]  # either one


def ok(description: str, schema: dict | None = None, media_type: str = "application/json", **more) -> dict:
    return {"200": {"description": description, **({"content": {media_type: {"schema": schema}}} if schema else {}),
                    **more}}


def operation(op_id: str, tag: str, summary: str, responses: dict, codes=(), *, secured: bool = True,
              body: dict | None = None, body_required: bool = True, params=(), description: str | None = None) -> dict:
    """One operation: its 200 answer (`responses`), the error `codes` it can answer (see ERRORS), 401 if `secured`."""
    codes = [*codes, *(["401"] if secured else [])]
    op = {"operationId": op_id, "tags": [tag], "summary": summary,
          "responses": {**responses, **{c: {"$ref": f"#/components/responses/{ERRORS[c]}"} for c in sorted(codes)}}}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = [PARAMETERS[p] for p in params]
    if body:
        op["requestBody"] = {"required": body_required, "content": body}
    if secured:
        op["security"] = SECURED
    return op


def json_body(schema: str, examples: list[str]) -> dict:
    """A JSON request body of `schema`, with EXAMPLES (by reference: each is 784 numbers, used by several paths)."""
    return {"application/json": {"schema": ref(schema),
                                 "examples": {name: {"$ref": f"#/components/examples/{name}"} for name in examples}}}


V2_INFER_EXAMPLE = {"id": "1", "inputs": [{"name": EXAMPLE_INPUT, "shape": EXAMPLE_SHAPE, "datatype": "FP32",
                                           "data": [0.0] * 784}]}
EXAMPLES = {  # one blank image for the course's MNIST model, in each format
    "v2_json": {"summary": "JSON tensors", "value": V2_INFER_EXAMPLE},
    "v2_binary_output": {"summary": "JSON input, the output as binary data",
                         "value": {**V2_INFER_EXAMPLE, "parameters": {"binary_data_output": True}}},
    "tfs_rows": {"summary": "row format: instances", "value": {"instances": [IMAGE]}},
    "tfs_columns": {"summary": "columnar format: inputs", "value": {"inputs": {EXAMPLE_INPUT: [IMAGE]}}},
}


def operations(settings: Settings) -> list[tuple[str, str, dict]]:
    """(method, path, operation) for every route the server answers."""
    ops = [
        ("get", "/v2/health/live", operation("v2Live", "v2", "Liveness: the process answers", ok("live", ref("V2Live")),
                                             secured=False)),
        ("get", "/v2/health/ready", operation(
            "v2Ready", "v2", "Readiness: some model has a version to serve",
            {**ok("ready", ref("V2Ready")), "400": {"description": "not ready",
                                                    "content": {"application/json": {"schema": ref("V2Ready")}}}},
            secured=False)),
        ("get", "/v2", operation("v2ServerMetadata", "v2", "Server name, version and protocol extensions",
                                 ok(f"extensions: {', '.join(EXTENSIONS)}", ref("V2ServerMetadata")), secured=False)),
    ]
    for at, params, name in (("", ("model",), ""), ("/versions/{version}", ("model", "v2_version"), "Version")):
        base = f"/v2/models/{{model}}{at}"
        which = "the given version or label" if at else "the latest available version"
        ops += [
            ("get", base, operation(f"v2ModelMetadata{name}", "v2", f"Model metadata ({which})",
                                    ok("metadata", ref("V2ModelMetadata")), ["400", "404", "503"], params=params)),
            ("get", f"{base}/ready", operation(
                f"v2ModelReady{name}", "v2", f"Whether {which} can answer",
                {**ok("ready", ref("V2ModelReady")), "400": {
                    "description": "not ready ({name, ready: false}), or an invalid name or version (an error)",
                    "content": {"application/json": {"schema": {"anyOf": [ref("V2ModelReady"), ref("Error")]}}}}},
                ["404"], params=params)),
            ("post", f"{base}/infer", operation(
                f"v2Infer{name}", "v2", f"Inference ({'the given version or label' if at else 'routed by the traffic split'})",
                v2_infer_answer(), ["400", "404", "413", "429", "500", "503", "504"],
                params=(*params, "binary_header", *(() if at else ("routing_key",))), body=v2_infer_body(),
                description="JSON tensors, or binary ones: Triton's binary tensor data extension, for FP32 tensors. "
                            f"A binary request sends the `{BINARY_HEADER}` header (the JSON part's length), the JSON "
                            "with `parameters.binary_data_size` in place of the input's `data`, then the input's raw "
                            "little-endian float32 bytes. An output is sent as binary data when the request's "
                            "`parameters.binary_data_output` or the output's `parameters.binary_data` is true.")),
        ]
    for at, params, name in (("", ("model", "routing_key"), ""), ("/versions/{version}", ("model", "version"), "Version")):
        ops += tfserving_operations(f"/v1/models/{{model}}{at}", params, name,
                                    "the given version" if at else "the latest available version")
    ops += tfserving_operations(LABEL_BASE, ("model", "label"), "Label", "the labelled version")
    ops += [
        ("post", "/v2/repository/index", operation("repositoryIndex", "repository", "Every version in the repository",
                                                   ok("the versions", ref("RepositoryIndex")))),
        *[("post", f"/v2/repository/models/{{model}}/{action}", operation(
            f"repository{action.title()}", "repository", summary, ok("done", ref("Empty")), ["400", "404"],
            params=("model",))) for action, summary in (
            ("load", "(Re)scan a model's folder and serve its versions"),
            ("unload", "Stop serving a model, until it is loaded again"))],
        ("get", "/v2/models/{model}/config", operation(
            "v2ModelConfig", "repository", "The model's configuration in force (its config.json, applied)",
            ok("the configuration", ref("ModelConfig")), ["400", "404"], params=("model",))),
        ("get", "/v2/models/{model}/shadow", operation(
            "v2ModelShadow", "repository", "The model's shadow comparisons: agreements and the latest disagreements",
            ok("the comparisons", ref("ShadowReport")), ["400", "404"], params=("model",))),
        ("get", "/metrics", operation("metrics", "operations", "Prometheus metrics (text exposition format)",
                                      ok("the metrics", STRING, "text/plain"), secured=settings.metrics_need_key)),
        *[("post", path, operation(op_id, "operations", summary, ok("nothing", ref("Empty")), ["413"],
                                   body={"*/*": {"schema": {}}}, body_required=False))
          for path, op_id, summary in (
            ("/empty", "empty", "A load-test floor: the key check and body read of an inference, as a FastAPI endpoint"),
            ("/empty-route", "emptyRoute", "The same floor on a fast route, as the inference routes are served"))],
        ("get", OPENAPI_URL, operation("openapi", "documentation", "This OpenAPI document",
                                       ok("the document", {"type": "object"}), secured=False)),
        ("get", DOCS_URL, operation("docs", "documentation", "Swagger UI for this document",
                                    ok("the page (without Swagger UI installed: a page that says so, with the fix)",
                                       STRING, "text/html"), secured=False)),
        *[("get", url, operation(op_id, "documentation", f"Swagger UI's {what}, for /docs (from swagger-ui-dist)", {
            **ok("the file", STRING, media_type),
            "404": error("Swagger UI is not installed in web/node_modules (the error says how to install it).")},
            secured=False))
          for url, op_id, what, media_type in ((SWAGGER_JS_URL, "docsJavaScript", "JavaScript", "text/javascript"),
                                               (SWAGGER_CSS_URL, "docsCss", "CSS", "text/css"))],
    ]
    if settings.demo:
        ops += demo_operations()
    return ops


def v2_infer_body() -> dict:
    return {**json_body("V2InferRequest", ["v2_json", "v2_binary_output"]),
            "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"},
                                         "description": f"binary tensors: `{BINARY_HEADER}` bytes of V2InferRequest JSON, "
                                                        "then the inputs' raw bytes"}}


def v2_infer_answer() -> dict:
    return {"200": {"description": "the outputs",
                    "headers": {BINARY_HEADER: {"description": "with binary outputs: the length of the JSON part",
                                                "schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": ref("V2InferResponse")},
                                "application/octet-stream": {
                                    "schema": {"type": "string", "contentMediaType": "application/octet-stream"},
                                    "description": f"with binary outputs: `{BINARY_HEADER}` bytes of V2InferResponse "
                                                   "JSON, then the outputs' raw little-endian float32 bytes"}}}}


def tfserving_operations(base: str, params: tuple, name: str, which: str) -> list[tuple[str, str, dict]]:
    """Status, metadata, :predict and :explain under `base` (/v1/models/{model}, .../versions/{version}, .../labels/{label})."""
    return [
        ("get", base, operation(f"tfsStatus{name}", "tfserving", f"Status of the model's versions ({which})",
                                ok("status", ref("TFSModelStatus")), ["400", "404"], params=params)),
        ("get", f"{base}/metadata", operation(f"tfsMetadata{name}", "tfserving", f"The signature ({which})",
                                              ok("metadata", ref("TFSModelMetadata")), ["400", "404", "503"],
                                              params=params)),
        ("post", f"{base}:predict", operation(
            f"tfsPredict{name}", "tfserving", f"Predict ({which})", ok("predictions or outputs", ref("TFSPredictResponse")),
            ["400", "404", "413", "429", "500", "503", "504"], params=params,
            body=json_body("TFSPredictRequest", ["tfs_rows", "tfs_columns"]),
            description="Row format (`instances`, answered with `predictions`) or columnar format (`inputs`, answered "
                        "with `outputs`). :classify and :regress are not served: the models are plain predict "
                        "signatures.")),
        ("post", f"{base}:explain", operation(
            f"tfsExplain{name}", "tfserving", f"Explain ({which})", ok("an attribution map per instance",
                                                                        ref("TFSExplainResponse")),
            ["400", "403", "404", "413", "429", "500", "503", "504"], params=params,
            body=json_body("TFSExplainRequest", ["tfs_rows"]),
            description="Attribution maps computed by the version's explainer (its PyTorch twin, shipped beside the "
                        "served file): 400 for a version without one. 403 when the server answers top classes only: "
                        "a map reveals the model's gradients.")),
    ]


def demo_operations() -> list[tuple[str, str, dict]]:
    """The browser demo's routes (demo.py), served with Settings(demo=True)."""
    file = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return [
        ("get", "/demo", operation("demo", "demo", "Redirects to /demo/", {"307": {"description": "to /demo/"}},
                                   secured=False)),
        ("get", "/demo/", operation("demoPage", "demo", "The draw-a-digit page", ok("the page", STRING, "text/html"),
                                    ["404"], secured=False)),
        ("get", "/demo/{name}", {**operation("demoFile", "demo", "The page's own files (.html, .js, .css)",
                                             {"200": {"description": "the file", "content": {
                                                 t: {"schema": STRING} for t in ("text/html", "text/javascript",
                                                                                 "text/css")}}},
                                             ["404"], secured=False),
                                 "parameters": [{**file, "example": "demo.js"}]}),
        ("get", "/demo/vendor/{name}", {**operation("demoRuntime", "demo", "ONNX Runtime Web's files (ort*.js, .mjs, "
                                                    ".wasm)", ok("the file", STRING, "application/octet-stream"),
                                                    ["404"], secured=False),
                                        "parameters": [{**file, "example": "ort.min.js"}]}),
        ("get", "/demo/models/{model}/model.onnx", {**operation(
            "demoModel", "demo", "The ONNX file of the version the server runs", ok("the model", STRING,
                                                                                    "application/octet-stream"),
            ["400", "404", "503"], params=("model",)),
            "parameters": [PARAMETERS["model"], {"name": "version", "in": "query", "required": False,
                                                 "schema": {"type": "string", "pattern": f"^{VERSION.pattern}$"}}]}),
    ]


# --------------------------------------------------------------------------- the document


def build(settings: Settings) -> dict:
    items: dict[str, dict] = {}  # path -> its operations ("paths" is the module of where files live)
    for method, path, op in operations(settings):
        items.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": SERVER_VERSION,
                 "description": "TensorFlow Serving's REST API and the Open Inference Protocol (KServe v2) for the "
                                "course's models. With an API key set, the operations marked with a lock need it "
                                "(Authorization: Bearer <key>, or X-API-Key: <key>); health, server metadata, "
                                "/metrics and this documentation never do."},
        "tags": [{"name": "v2", "description": "Open Inference Protocol (KServe v2)"},
                 {"name": "tfserving", "description": "TensorFlow Serving REST API"},
                 {"name": "repository", "description": "model repository extension (operators)"},
                 {"name": "operations", "description": "metrics and load-test floors"},
                 {"name": "documentation"}, *([{"name": "demo", "description": "the browser demo"}] if settings.demo else [])],
        "paths": items,
        "components": {
            "schemas": SCHEMAS,
            "examples": EXAMPLES,
            "responses": errors(settings),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "the server's API key"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }

