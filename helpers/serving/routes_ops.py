"""Routes for operating the server rather than for a protocol: Prometheus metrics and the two load-test floors.

    GET  /metrics       Prometheus text exposition format (https://prometheus.io/docs/instrumenting/exposition_formats/);
                        open on loopback, behind the API key otherwise (Settings.metrics_need_key): the metrics name
                        every model and version, which the model routes hide from a caller without the key.
                        Prometheus sends one with `authorization: {credentials_file: ...}` in its scrape config
    POST /empty         a floor for load tests: the key check and the body read every inference does, no parsing, no
                        model, as an ordinary FastAPI endpoint (the framework's own floor)
    POST /empty-route   the same on a fast route, like the inference routes (their floor); chapter 06 measures both
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpers.serving.http import FastRoute, counted, json_response, route
from helpers.serving.protocols import RequestError

if TYPE_CHECKING:  # for the annotations only: app.py imports this module
    from helpers.serving.app import Server


def routes(server: Server) -> list[Route]:
    return [route(server, "GET", "/metrics", metrics),
            counted(server, "empty", "POST", "/empty", empty, kind=APIRoute),
            counted(server, "empty", "POST", "/empty-route", empty, kind=FastRoute)]


async def metrics(server: Server, request: Request) -> Response:
    if server.settings.metrics_need_key:
        try:
            server.authorize(request)
        except RequestError as error:
            return json_response({"error": error.message}, error.status, headers={"WWW-Authenticate": "Bearer"})
    server.refresh_gauges()
    return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def empty(server: Server, request: Request, labels: dict) -> Response:
    server.authorize(request)
    await server.read_body(request)
    return Response(b"{}", media_type="application/json")
