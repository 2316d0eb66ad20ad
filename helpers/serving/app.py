"""The inference server: a FastAPI app speaking TF Serving's REST API and the Open Inference Protocol (KServe v2).

Built by `create_app(settings)`; `python -m helpers.serving` runs it on uvicorn. This module holds the settings, the
state every route shares (`Server`: repository, batchers, metrics, API key) and the assembly; the routes are in one
module per protocol, each a `routes(server)` list:

    routes_v2          Open Inference Protocol: /v2 health, server and model metadata, readiness, /infer
    routes_tfserving   TensorFlow Serving REST: /v1/models/... status, metadata, :predict
    routes_repository  the model repository extension: /v2/repository/index, load, unload
    routes_ops         /metrics and the load-test floors /empty, /empty-route
    demo               the browser demo under /demo/ (with Settings(demo=True))
    http               what they share: JSON answers, name and version checks, `route` and `counted`

Every inference goes through `Server.infer` and every counted answer through `Server.respond`, so limits, errors and
metrics are handled in one place. How a request finds its route: see `FastPath`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route

from helpers.serving import demo, routes_ops, routes_repository, routes_tfserving, routes_v2
from helpers.serving.batching import DynamicBatcher
from helpers.serving.drift import DriftMonitor, drift_score
from helpers.serving.http import SERVER_VERSION, FastRoute, check_model_name, json_response
from helpers.serving.http import parse_version as parse_version  # importable from here, as before the split
from helpers.serving.metrics import ServerMetrics
from helpers.serving.protocols import RequestError
from helpers.serving.repository import ModelNotFound, ModelRepository, VersionNotReady

log = logging.getLogger("helpers.serving")


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


def create_app(settings: Settings) -> FastPath:
    """The ASGI app, from one table of routes: a route is added in its module's `routes()` only, and its class says
    who serves it (FastRoute: FastPath; Route and FastAPI's APIRoute: the FastAPI app)."""
    server = Server(settings)
    table = [*routes_v2.routes(server), *routes_tfserving.routes(server), *routes_repository.routes(server),
             *routes_ops.routes(server), *(demo.routes(server) if settings.demo else [])]
    app = FastAPI(title="deploy-dl-course inference server", version=SERVER_VERSION, lifespan=server.lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None, exception_handlers={StarletteHTTPException: http_error},
                  routes=[r for r in table if not isinstance(r, FastRoute)])
    app.state.server = server  # for whoever holds the app only (tests, demo.add_routes); routes are given it
    return FastPath(app, [r for r in table if isinstance(r, FastRoute)])


async def http_error(request: Request, error: StarletteHTTPException) -> Response:
    """Unknown paths and wrong methods answer in the protocols' error shape too, not FastAPI's {"detail": ...}."""
    return json_response({"error": f"{error.detail}: {request.method} {request.url.path[:200]}"}, error.status_code)


class FastPath:
    """The ASGI app uvicorn runs. A request for a FastRoute (the inference routes and /empty-route) goes straight to
    it; everything else, and the start-up and shutdown events, to the FastAPI app. For a model this fast, FastAPI's
    middleware costs ~10 % of the throughput, and its parameter parsing and the scan through the other routes ~15 %
    (measured; chapter 06 compares the two floors, /empty and /empty-route). The fast routes answer every error
    themselves (`http.counted`), so they need none of the framework. A request that matches a fast route's path but not
    its method (a PUT to /infer) goes to FastAPI, which has no route there: 404."""

    def __init__(self, app: FastAPI, routes: list[Route]):
        self.app, self.routes = app, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)  # FULL: path and method match
                if match is Match.FULL:
                    scope["route"] = route
                    scope.update(child_scope)
                    return await route.handle(scope, receive, send)
        await self.app(scope, receive, send)


class Server:
    """The state behind the routes: repository, batchers, drift monitors, metrics, settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = ServerMetrics()
        self.repository = ModelRepository(settings.repository, on_load=self.count_load)
        self.batchers: dict[int, tuple] = {}  # id(version state) -> (state, its batcher); the state is kept so its id stays unique
        self.drift_monitors: dict[int, tuple] = {}  # id(version state) -> (state, its DriftMonitor), likewise
        self.stop = threading.Event()

    @asynccontextmanager
    async def lifespan(self, app):
        """Start-up: the first scan (in a thread: loading warms models up), then a thread that rescans every
        poll_interval_s. Shutdown: stop it and close the batchers."""
        await asyncio.get_running_loop().run_in_executor(None, self.repository.scan)
        self.repository.watch(self.settings.poll_interval_s, self.stop)
        yield
        self.stop.set()
        for _, batcher in self.batchers.values():
            await batcher.close()

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

    # ------------------------------------------------------------------ the one inference path

    async def infer(self, model: str, state, x: np.ndarray) -> np.ndarray:
        """The model's outputs for `x` (validated by the protocol's parser), batched with other requests if enabled,
        within the request timeout; timed, and watched for drift."""
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
        try:
            monitor = self.drift_monitor(model, state)
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

    def drift_monitor(self, model: str, state) -> DriftMonitor:
        """The drift monitor of this loaded version, made on its first answer (those of unloaded states are dropped)."""
        if id(state) not in self.drift_monitors:
            self.forget_unloaded(self.drift_monitors)
            self.drift_monitors[id(state)] = (state, DriftMonitor(state.backend.drift_reference, self.settings.drift_window,
                                                                  self.settings.drift_alpha))
            if self.repository.get(model).version == state.version:  # a new version starts with no evidence either way
                self.metrics.drift_score.labels(model).set(float("nan"))
                self.metrics.window_confidence.labels(model).set(float("nan"))
                self.metrics.drift_in_a_row.labels(model).set(0)
        return self.drift_monitors[id(state)][1]

    # ------------------------------------------------------------------ every counted answer

    async def respond(self, endpoint: str, request: Request, handler) -> Response:
        """Run a counted route's `handler(server, request, labels)`; turn RequestErrors into JSON errors; count and
        time every answer."""
        started = time.perf_counter()
        labels = {"model": "", "version": ""}  # the handler fills them in as it learns them
        try:
            response = await handler(self, request, labels)
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
