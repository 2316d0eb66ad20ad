"""The browser demo's routes (chapter 09), added to the server by `--demo`:

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
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from helpers import paths
from helpers.fixes import FIXES
from helpers.serving.app import parse_version
from helpers.serving.protocols import RequestError

ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cache-Control": "no-cache"}  # no-cache: revalidate, so an edited page or a new model shows on reload
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
               ".wasm": "application/wasm"}  # WebAssembly compiles while it downloads only when served as application/wasm
PAGE_FILE = re.compile(r"^[A-Za-z0-9_-]+\.(html|js|css)$")
RUNTIME_FILE = re.compile(r"^ort[A-Za-z0-9_.-]*\.(js|mjs|wasm)$")
MISSING_RUNTIME = f"{FIXES['web-runtime'].symptom}: {FIXES['web-runtime'].fix}"


def static_file(directory: Path, name: str, pattern: re.Pattern, missing: str) -> FileResponse:
    if not pattern.match(name) or not (directory / name).is_file():
        raise RequestError(404, missing)
    return FileResponse(directory / name, media_type=MEDIA_TYPES[Path(name).suffix], headers=ISOLATION)


def add_routes(app, server, web: Path = paths.WEB, runtime: Path = paths.WEB_RUNTIME) -> None:
    @app.get("/demo")
    async def demo_root():
        return RedirectResponse("/demo/")

    @app.get("/demo/")
    async def demo_index():
        return await page_file("index.html")

    @app.get("/demo/{name}")
    async def page_file(name: str):
        async def handle(labels):
            return static_file(web, name, PAGE_FILE, f"no demo file named {name[:64]!r}")

        return await server.respond("demo", handle)

    @app.get("/demo/vendor/{name}")
    async def runtime_file(name: str):
        async def handle(labels):
            if not runtime.is_dir():
                raise RequestError(404, MISSING_RUNTIME)
            return static_file(runtime, name, RUNTIME_FILE, f"no ONNX Runtime Web file named {name[:64]!r}")

        return await server.respond("demo", handle)

    @app.get("/demo/models/{model}/model.onnx")
    async def model_file(model: str, request: Request):
        async def handle(labels):
            server.authorize(request)  # the model file is the model: with an API key set, only key holders get it
            labels["model"] = model
            state = server.lookup(model, parse_version(request.query_params.get("version")))
            labels["version"] = str(state.version)
            model_bytes = getattr(state.backend, "model_bytes", None)
            if model_bytes is None:
                raise RequestError(404, f"model '{model}' version {state.version} is a {state.backend.platform} model; "
                                        "only ONNX models can run in the page")
            return Response(model_bytes, media_type="application/octet-stream",
                            headers={**ISOLATION, "X-Model-Version": str(state.version)})

        return await server.respond("demo", handle)

