"""The browser demo's routes (chapter 09), added to the server by `--demo`:

    GET /demo                          redirects to /demo/
    GET /demo/                         web/index.html, the draw-a-digit page
    GET /demo/<file>.{html,js,css}     the page's own files, from web/
    GET /demo/vendor/ort*.{js,mjs,wasm}  ONNX Runtime Web, from web/node_modules (installed by `make setup`, never a CDN)
    GET /demo/models/<model>/model.onnx  the ONNX file of the version the server is running, so that the page runs the
                                         very same model on the device (?version=N for an older one); behind the
                                         API key when the server has one (the page then answers on no path)

Every /demo response carries the two headers that make the page cross-origin isolated (COOP and COEP): without them
the browser has no SharedArrayBuffer and ONNX Runtime Web runs on one thread only.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from helpers import paths
from helpers.fixes import FIXES
from helpers.serving.http import counted, parse_version, route
from helpers.serving.protocols import RequestError

if TYPE_CHECKING:  # for the annotations only: app.py imports this module
    from helpers.serving.app import Server

ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cache-Control": "no-cache"}  # no-cache: revalidate, so an edited page or a new model shows on reload
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
               ".wasm": "application/wasm"}  # WebAssembly compiles while it downloads only when served as application/wasm
PAGE_FILE = re.compile(r"^[A-Za-z0-9_-]+\.(html|js|css)$")
RUNTIME_FILE = re.compile(r"^ort[A-Za-z0-9_.-]*\.(js|mjs|wasm)$")
MISSING_RUNTIME = f"{FIXES['web-runtime'].symptom}: {FIXES['web-runtime'].fix}"


def routes(server: Server, web: Path = paths.WEB, runtime: Path = paths.WEB_RUNTIME) -> list[Route]:
    """The demo's routes; `web` and `runtime` are where the page's files and ONNX Runtime Web are read from."""
    page, vendor = partial(page_file, web=web), partial(runtime_file, runtime=runtime)
    return [route(server, "GET", "/demo", to_the_page),
            counted(server, "demo", "GET", "/demo/", page),
            counted(server, "demo", "GET", "/demo/{name}", page),
            counted(server, "demo", "GET", "/demo/vendor/{name}", vendor),
            counted(server, "demo", "GET", "/demo/models/{model}/model.onnx", model_file)]


def add_routes(app, server: Server, web: Path = paths.WEB, runtime: Path = paths.WEB_RUNTIME) -> None:
    """Add the demo's routes to a FastAPI `app` already built (create_app adds them itself with Settings(demo=True))."""
    app.router.routes.extend(routes(server, web, runtime))


def static_file(directory: Path, name: str, pattern: re.Pattern, missing: str) -> FileResponse:
    if not pattern.match(name) or not (directory / name).is_file():  # neither pattern admits "/": no way out of `directory`
        raise RequestError(404, missing)
    return FileResponse(directory / name, media_type=MEDIA_TYPES[Path(name).suffix], headers=ISOLATION)


async def to_the_page(server: Server, request: Request) -> Response:
    return RedirectResponse("/demo/")  # relative URLs in the page resolve under /demo/ only with the slash


async def page_file(server: Server, request: Request, labels: dict, web: Path) -> Response:
    name = request.path_params.get("name", "index.html")
    return static_file(web, name, PAGE_FILE, f"no demo file named {name[:64]!r}")


async def runtime_file(server: Server, request: Request, labels: dict, runtime: Path) -> Response:
    if not runtime.is_dir():
        raise RequestError(404, MISSING_RUNTIME)
    name = request.path_params["name"]
    return static_file(runtime, name, RUNTIME_FILE, f"no ONNX Runtime Web file named {name[:64]!r}")


async def model_file(server: Server, request: Request, labels: dict) -> Response:
    server.authorize(request)  # the model file is the model: with an API key set, only key holders get it
    model = labels["model"] = request.path_params["model"]
    state = server.lookup(model, parse_version(request.query_params.get("version")))
    labels["version"] = str(state.version)
    model_bytes = getattr(state.backend, "model_bytes", None)
    if model_bytes is None:
        raise RequestError(404, f"model '{model}' version {state.version} is a {state.backend.platform} model; "
                                "only ONNX models can run in the page")
    return Response(model_bytes, media_type="application/octet-stream",
                    headers={**ISOLATION, "X-Model-Version": str(state.version)})
