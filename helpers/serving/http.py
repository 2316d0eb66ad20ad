"""What every route module shares: JSON answers, the checks of names and versions in paths, and the two ways to make a
route. A route module (routes_v2, routes_tfserving, routes_repository, routes_ops, demo) imports this, never app.py,
so that app.py can import them all without a cycle.

Every handler is a plain function of the server state and the request:

    async def handler(server, request, labels) -> Response   made a route by `counted`: its answer is counted and
                                                             timed under an endpoint name, a RequestError it raises
                                                             becomes a JSON error (Server.respond); it writes the
                                                             model and version it serves into `labels`
    async def handler(server, request) -> Response           made a route by `route`: not counted (health, /metrics)
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpers.serving.model_config import LABEL
from helpers.serving.protocols import RequestError
from helpers.serving.repository import VERSION, valid_name

SERVER_NAME, SERVER_VERSION = "deploy-dl-course", "1.0"


class FastRoute(Route):
    """A route served before the framework (see app.FastPath): no FastAPI parameter parsing, no middleware, no
    exception handlers, so its handler must answer every error itself, as `counted` routes do."""


def route(server, method: str, path: str, handler, kind: type[Route] = Route) -> Route:
    async def answer(request: Request) -> Response:
        return await handler(server, request)

    return kind(path, answer, methods=[method])


def counted(server, endpoint: str, method: str, path: str, handler, kind: type[Route] = Route) -> Route:
    """A route whose answers (errors too) are counted and timed under the metric label `endpoint`. `kind` is Route,
    FastRoute, or fastapi's APIRoute (the answer's `request: Request` signature is what FastAPI injects)."""
    async def answer(request: Request) -> Response:
        return await server.respond(endpoint, request, handler)

    return kind(path, answer, methods=[method])


def json_response(document, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), status, headers=headers,
                    media_type="application/json")


def parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not VERSION.fullmatch(text):
        raise RequestError(400, f"version must be a positive integer, got {text[:40]!r}")
    return int(text)


def parse_version_or_label(text: str | None) -> tuple[int | None, str | None]:
    """A path's version segment: a number names a version, a name a version label (stable, canary)."""
    if text is not None and not VERSION.fullmatch(text) and LABEL.match(text):
        return None, text
    if text is not None and not VERSION.fullmatch(text):
        raise RequestError(400, f"version must be a positive integer or a version label, got {text[:40]!r}")
    return parse_version(text), None


def check_model_name(model: str) -> str:
    if not valid_name(model):
        raise RequestError(400, f"invalid model name {model[:64]!r}")
    return model
