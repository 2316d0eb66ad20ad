"""The inference server: a FastAPI app speaking TF Serving's REST API and the Open Inference Protocol (KServe v2).

Built by `create_app(settings)`; `python -m helpers.serving` runs it on uvicorn. Every inference goes through `infer`,
every answer through `respond`, so limits, errors and metrics are handled in one place.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route, Router
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from helpers.serving import protocols
from helpers.serving.batching import DynamicBatcher
from helpers.serving.metrics import ServerMetrics
from helpers.serving.protocols import RequestError
from helpers.serving.repository import VERSION, ModelNotFound, ModelRepository, VersionNotReady, valid_name

log = logging.getLogger("helpers.serving")
SERVER_NAME, SERVER_VERSION = "deploy-dl-course", "1.0"


@dataclass(frozen=True)
class Settings:
    repository: Path
    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024  # a 5 MB request is refused with 413
    max_batch_size: int = 256  # instances per request
    request_timeout_s: float = 10.0  # for a request waiting in a batch queue (an unbatched call starts at once)
    batching: bool = False
    batch_max_size: int = 32  # rows per runtime call when batching
    batch_max_delay_ms: float = 2.0
    poll_interval_s: float = 1.0  # how often the repository is scanned for new versions
    drift_window: int = 50  # outputs per drift test, for versions that ship a drift reference (chapter 07)
    drift_alpha: float = 0.01  # a window is flagged as drifted when its test's p-value is below this
    demo: bool = False  # serve the browser demo under /demo/ (chapter 09)


V1_PATH = re.compile(r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?::(?P<verb>\w+)|/(?P<metadata>metadata))?$")


def json_response(document, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), status, headers=headers,
                    media_type="application/json")


def parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not VERSION.fullmatch(text):
        raise RequestError(400, f"version must be a positive integer, got {text[:40]!r}")
    return int(text)


def match_v1(path: str):
    if ".." in path or path.startswith("/"):
        raise RequestError(400, f"invalid model name in {path[:64]!r}")
    return V1_PATH.match(path)


def check_model_name(model: str) -> str:
    if not valid_name(model):
        raise RequestError(400, f"invalid model name {model[:64]!r}")
    return model


class Server:
    """The state behind the routes: repository, batchers, metrics, settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = ServerMetrics()
        self.repository = ModelRepository(settings.repository, on_load=self.count_load)
        self.batchers: dict[int, tuple] = {}  # id(version state) -> (state, its batcher); the state is kept so its id stays unique
        self.drift_monitors: dict[int, tuple] = {}  # id(version state) -> (state, its DriftMonitor), likewise
        self.stop = threading.Event()

    def count_load(self, model: str, version: int, ok: bool) -> None:
        self.metrics.model_loads.labels(model, str(version), "success" if ok else "failure").inc()

    def refresh_gauges(self) -> None:
        self.metrics.versions_available.clear()  # models removed or unloaded disappear from the metric
        self.metrics.versions_failed.clear()
        for model, versions in dict(self.repository.models).items():
            self.metrics.versions_available.labels(model).set(sum(s.state == "AVAILABLE" for s in versions.values()))
            # a gauge, not an increase() of model_loads_total: a counter series born at 1 shows no increase
            self.metrics.versions_failed.labels(model).set(sum(s.state == "UNAVAILABLE" for s in versions.values()))

    # ------------------------------------------------------------------ checks shared by the routes

    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = request.headers.get("x-api-key") or (token.strip() if scheme.lower() == "bearer" else "")
        if not hmac.compare_digest(given.encode(), key.encode()):  # constant time: no guessing the key byte by byte
            raise RequestError(401, "missing or invalid API key (send 'Authorization: Bearer <key>' or 'X-API-Key: <key>')")

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                raise RequestError(413, f"request body of {int(declared):,} bytes exceeds the limit of {limit:,}")
            return await request.body()  # the server stops reading at the declared length
        chunks, size = [], 0  # chunked upload, length unknown: count as it arrives
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body exceeds the limit of {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def lookup(self, model: str, version: int | None):
        try:
            return self.repository.get(check_model_name(model), version)
        except ModelNotFound as error:
            raise RequestError(404, str(error)) from None
        except VersionNotReady as error:
            raise RequestError(503, str(error)) from None

    async def infer(self, model: str, state, x: np.ndarray) -> np.ndarray:
        """The model's outputs for `x`, batched with other requests if enabled, within the request timeout."""
        started = time.perf_counter()
        try:
            if self.settings.batching:
                batcher = self.batcher(model, state)
                self.metrics.child(self.metrics.queue_depth, model).set(batcher.depth())
                async with asyncio.timeout(self.settings.request_timeout_s):
                    y = await batcher.submit(x)
            else:
                # Unbatched calls run right here, on the event loop: for a model that answers in tens of microseconds,
                # handing the call to a worker thread costs more than the call (measured). A slow model should batch.
                self.metrics.child(self.metrics.batch_size, model).observe(len(x))
                y = state.backend.predict(x)
        except TimeoutError:
            raise RequestError(504, f"inference took longer than {self.settings.request_timeout_s} s") from None
        except Exception as error:  # inputs were validated before, so this is the server's failure: 500, logged, keep serving
            log.exception("inference failed for model %s version %d", model, state.version)
            raise RequestError(500, f"inference failed: {type(error).__name__}: {str(error)[:300]}") from None
        self.metrics.child(self.metrics.inference_latency, model, str(state.version)).observe(time.perf_counter() - started)
        y = np.asarray(y)
        if state.backend.drift_reference is not None and self.settings.drift_window > 0:
            self.watch_drift(model, state, y)
        return y

    def forget_unloaded(self, cache: dict) -> list:
        """Drop and return the entries of a per-version-state `cache` (id(state) -> (state, thing)) whose state is no
        longer loaded: batchers and drift monitors belong to a loaded version, not to a version number."""
        live = {id(s) for versions in dict(self.repository.models).values() for s in versions.values()}
        return [cache.pop(key)[1] for key in [k for k in cache if k not in live]]

    def watch_drift(self, model: str, state, y: np.ndarray) -> None:
        """Feed the outputs to this version's drift monitor and publish each finished window (a test costs well under a
        millisecond, once per window, so it runs inline). The per-model gauges describe the version answering unpinned
        requests, the latest; windows of requests pinned to an older version are tested but not published. A failure
        here is logged and counted, never turned into a failed request: the answer is already computed."""
        from helpers.monitoring import DriftMonitor, drift_score

        try:
            if id(state) not in self.drift_monitors:
                self.forget_unloaded(self.drift_monitors)
                self.drift_monitors[id(state)] = (state, DriftMonitor(state.backend.drift_reference, self.settings.drift_window,
                                                                      self.settings.drift_alpha))
                if self.repository.get(model).version == state.version:  # a new version starts with no evidence either way
                    self.metrics.drift_score.labels(model).set(float("nan"))
                    self.metrics.window_confidence.labels(model).set(float("nan"))
                    self.metrics.drift_in_a_row.labels(model).set(0)
            monitor = self.drift_monitors[id(state)][1]
            finished = monitor.observe(y)
            if finished and self.repository.get(model).version == state.version:
                p_value, confidence = finished[-1]
                self.metrics.drift_score.labels(model).set(drift_score(p_value))
                self.metrics.window_confidence.labels(model).set(confidence)
                self.metrics.drift_in_a_row.labels(model).set(monitor.flagged_in_a_row)
                self.metrics.drift_windows.labels(model).inc(len(finished))
        except Exception:
            log.exception("drift monitoring failed for model %s version %d; the request was answered", model, state.version)
            self.metrics.drift_errors.labels(model).inc()

    def batcher(self, model: str, state) -> DynamicBatcher:
        """The batcher of this loaded version. A version reloaded under the same number is a new state with a new
        backend, so batchers belong to states; those of states no longer loaded are closed here."""
        if id(state) not in self.batchers:
            for stale in self.forget_unloaded(self.batchers):
                asyncio.get_running_loop().create_task(stale.close())
            histogram = self.metrics.child(self.metrics.batch_size, model)
            self.batchers[id(state)] = (state, DynamicBatcher(state.backend.predict, self.settings.batch_max_size,
                                                              self.settings.batch_max_delay_ms, on_batch=histogram.observe))
        return self.batchers[id(state)][1]

    async def respond(self, endpoint: str, handler) -> Response:
        """Run a route's handler; turn RequestErrors into JSON errors; count and time every answer."""
        started = time.perf_counter()
        labels = {"model": "", "version": ""}  # the handler fills them in as it learns them
        try:
            response = await handler(labels)
        except RequestError as error:
            response = json_response({"error": error.message}, error.status,
                                     headers={"WWW-Authenticate": "Bearer"} if error.status == 401 else None)
        except ClientDisconnect:  # the client left mid-upload: nobody reads this answer, and it is not a server bug
            response = json_response({"error": "client disconnected before sending the whole request"}, 400)
        except Exception as error:  # a bug must still answer, as JSON, and be logged
            log.exception("unexpected error in %s", endpoint)
            response = json_response({"error": f"internal error: {type(error).__name__}"}, 500)
        # a name the repository does not know is counted as "unknown": clients must not be able to create metric series
        model = labels["model"] if not labels["model"] or labels["model"] in self.repository.models else "unknown"
        self.metrics.child(self.metrics.requests, model, labels["version"], endpoint, str(response.status_code)).inc()
        self.metrics.child(self.metrics.request_latency, endpoint).observe(time.perf_counter() - started)
        return response


def create_app(settings: Settings) -> FastAPI:
    server = Server(settings)

    @asynccontextmanager
    async def lifespan(app):
        await asyncio.get_running_loop().run_in_executor(None, server.repository.scan)
        server.repository.watch(settings.poll_interval_s, server.stop)
        yield
        server.stop.set()
        for _, batcher in server.batchers.values():
            await batcher.close()

    app = FastAPI(title="deploy-dl-course inference server", version=SERVER_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        """Unknown paths and wrong methods answer in the protocols' error shape too, not FastAPI's {"detail": ...}."""
        return json_response({"error": f"{error.detail}: {request.method} {request.url.path[:200]}"}, error.status_code)

    # ------------------------------------------------------------------ health and metrics (open, no key needed)

    @app.get("/v2/health/live")
    async def live():
        return json_response({"live": True})

    @app.get("/v2/health/ready")
    async def ready():
        ok = server.repository.ready()
        return json_response({"ready": ok}, 200 if ok else 400)  # the protocol: 200 means ready, 4xx not

    @app.get("/v2")
    async def server_metadata():
        return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data", "model_repository"]})

    @app.get("/metrics")
    async def metrics():
        server.refresh_gauges()
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def empty(request: Request):
        """A floor for load tests: the key check and the body read every inference does, no parsing, no model."""
        async def handle(labels):
            server.authorize(request)
            await server.read_body(request)
            return Response(b"{}", media_type="application/json")

        return await server.respond("empty", handle)

    app.post("/empty")(empty)  # as a FastAPI endpoint: the framework's own floor

    if settings.demo:
        from helpers.serving import demo  # imported here: it imports this module

        demo.add_routes(app, server)

    # ------------------------------------------------------------------ TensorFlow Serving REST API

    @app.get("/v1/models/{path:path}")
    async def tfs_get(path: str, request: Request):
        async def handle(labels):
            server.authorize(request)
            match = match_v1(path)
            if not match or match["verb"]:
                raise RequestError(404, f"no such endpoint: GET /v1/models/{path[:100]}")
            model, version = check_model_name(match["model"]), parse_version(match["version"])
            labels["model"] = model
            if match["metadata"]:
                state = server.lookup(model, version)
                return json_response(protocols.tfs_metadata(model, state.version, state.backend))
            try:
                versions = server.repository.versions(model)
            except ModelNotFound as error:
                raise RequestError(404, str(error)) from None
            if version is not None:
                if version not in versions:
                    raise RequestError(404, f"model '{model}' has no version {version}")
                versions = {version: versions[version]}
            return json_response(protocols.tfs_status(versions))

        return await server.respond("v1_status", handle)

    async def tfs_predict(path: str, request: Request):
        async def handle(labels):
            server.authorize(request)
            match = match_v1(path)
            if not match or match["metadata"] or match["verb"] is None:
                raise RequestError(404, f"no such endpoint: POST /v1/models/{path[:100]}")
            if match["verb"] != "predict":
                raise RequestError(400, f"method ':{match['verb']}' is not supported here; use ':predict'")
            model, version = check_model_name(match["model"]), parse_version(match["version"])
            labels["model"] = model
            document = protocols.parse_json(await server.read_body(request))
            state = server.lookup(model, version)
            labels["version"] = str(state.version)
            x, layout = protocols.tfs_inputs(document, state.backend.input, settings.max_batch_size)
            y = await server.infer(model, state, x)
            return Response(protocols.tfs_response(y, layout), media_type="application/json")

        return await server.respond("v1_predict", handle)

    # ------------------------------------------------------------------ Open Inference Protocol (KServe v2)

    async def v2_model(request: Request, model: str, version: str | None, endpoint: str):
        async def handle(labels):
            server.authorize(request)
            labels["model"] = check_model_name(model)
            if endpoint == "v2_ready":
                try:
                    state = server.lookup(model, parse_version(version))
                except RequestError as error:
                    if error.status != 503:
                        raise
                    return json_response({"name": model, "ready": False}, 400)  # the protocol: not ready is a 4xx
                labels["version"] = str(state.version)
                return json_response({"name": model, "ready": True})
            state = server.lookup(model, parse_version(version))
            labels["version"] = str(state.version)
            available = [v for v, s in server.repository.versions(model).items() if s.state == "AVAILABLE"]
            return json_response(protocols.v2_metadata(model, sorted(available), state.backend))

        return await server.respond(endpoint, handle)

    async def v2_infer(request: Request, model: str, version: str | None):
        async def handle(labels):
            server.authorize(request)
            labels["model"] = check_model_name(model)
            body = await server.read_body(request)
            header, binary = protocols.split_binary(body, request.headers.get(protocols.BINARY_HEADER))
            document = protocols.parse_json(header)
            state = server.lookup(model, parse_version(version))
            labels["version"] = str(state.version)
            x = protocols.v2_inputs(document, binary, state.backend.input, settings.max_batch_size)
            binary_out = protocols.v2_wants_binary(document, state.backend.output)
            y = await server.infer(model, state, x)
            content, headers = protocols.v2_response(document, model, state.version, state.backend.output, y, binary_out)
            media = "application/octet-stream" if binary_out else "application/json"
            return Response(content, headers=headers, media_type=media)

        return await server.respond("v2_infer", handle)

    async def model_metadata(request: Request):
        return await v2_model(request, request.path_params["model"], request.path_params.get("version"), "v2_metadata")

    async def model_ready(request: Request):
        return await v2_model(request, request.path_params["model"], request.path_params.get("version"), "v2_ready")

    for version_part in ("", "/versions/{version}"):  # each endpoint, for the latest version and for an explicit one
        app.add_route(f"/v2/models/{{model}}{version_part}", model_metadata, methods=["GET"])
        app.add_route(f"/v2/models/{{model}}{version_part}/ready", model_ready, methods=["GET"])

    async def infer(request: Request):
        return await v2_infer(request, request.path_params["model"], request.path_params.get("version"))

    async def predict(request: Request):
        return await tfs_predict(request.path_params["path"], request)

    # The inference routes are plain Starlette routes, first in the table: FastAPI's parameter parsing and the scan
    # through the other routes cost ~15 % of the throughput of a model this fast (measured). /empty-route is the floor
    # of such a route, /empty the floor of a FastAPI endpoint.
    hot_routes = []
    for path, endpoint in [("/v2/models/{model}/infer", infer), ("/v2/models/{model}/versions/{version}/infer", infer),
                           ("/v1/models/{path:path}", predict), ("/empty-route", empty)]:
        hot_routes.append(Route(path, endpoint, methods=["POST"]))

    # ------------------------------------------------------------------ model repository extension (operators)

    @app.post("/v2/repository/index")
    async def repository_index(request: Request):
        async def handle(labels):
            server.authorize(request)
            rows = []
            for model, versions in sorted(dict(server.repository.models).items()):
                for version, state in sorted(versions.items()):
                    rows.append({"name": model, "version": str(version), "state": "READY" if state.state == "AVAILABLE" else state.state,
                                 "reason": state.error})
            return json_response(rows)

        return await server.respond("repository", handle)

    @app.post("/v2/repository/models/{model}/{action}")
    async def repository_action(model: str, action: str, request: Request):
        async def handle(labels):
            server.authorize(request)
            labels["model"] = check_model_name(model)
            if action not in ("load", "unload"):
                raise RequestError(404, f"no such repository action '{action}'; use load or unload")
            try:
                if action == "load":
                    await asyncio.get_running_loop().run_in_executor(None, server.repository.load, model)
                else:
                    server.repository.unload(model)
            except ModelNotFound as error:
                raise RequestError(404, str(error)) from None
            return json_response({})

        return await server.respond("repository", handle)

    return FastPath(app, Router(routes=hot_routes))


class FastPath:
    """The ASGI app uvicorn runs: POST requests to the inference routes go straight to them; everything else (and the
    start-up and shutdown events) to the FastAPI app. The inference handlers answer every error themselves, so they
    need none of the framework's middleware, which costs ~10 % of the throughput of a fast model (measured)."""

    def __init__(self, app: FastAPI, hot: "Router"):
        self.app, self.hot = app, hot

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and any(
                route.matches(scope)[0] == Match.FULL for route in self.hot.routes):
            await self.hot(scope, receive, send)
        else:
            await self.app(scope, receive, send)
