"""The inference server: a FastAPI app speaking TF Serving's REST API and the Open Inference Protocol (KServe v2).

Built by `create_app(settings)`; `python -m helpers.serving` runs it on uvicorn. This module holds the settings, the
state every route shares (`Server`: repository, batchers, metrics, API key) and the assembly; the routes are in one
module per protocol, each a `routes(server)` list:

    routes_v2          Open Inference Protocol: /v2 health, server and model metadata, readiness, /infer
    routes_tfserving   TensorFlow Serving REST: /v1/models/... status, metadata, :predict
    routes_repository  the model repository extension: /v2/repository/index, load, unload
    routes_ops         /metrics and the load-test floors /empty, /empty-route
    openapi            /openapi.json, the OpenAPI document of every route here, and Swagger UI at /docs (its files
                       from web/node_modules, never a CDN)
    demo               the browser demo under /demo/ (with Settings(demo=True))
    http               what they share: JSON answers, name and version checks, `route` and `counted`

Every inference goes through `Server.infer` and every counted answer through `Server.respond`, so limits, errors and
metrics are handled in one place. How a request finds its route: see `FastPath`. How it reaches its model: each loaded
version gets a caller on its first request (batching.DynamicBatcher with --batching, else batching.DirectCalls, which
runs a fast model inline on the event loop and a slow one in the server's thread pool); a version's queue is bounded,
and a request beyond it is shed at once with 503 and Retry-After (`RetryLater`). A model's config.json overrides the
batching and queue settings for its versions (model_config; `new_caller`).

The defences of chapter 12, each off unless its setting is given:

    trusted_key      every version must carry a signature by this public key (helpers.signing) before a byte of it is
                     loaded; a version that fails is refused like any bad version (its status says why, the previous
                     one keeps serving), and every check is counted and timed (`verify_signature`)
    rate_limit       a token bucket per API key (or per client address, without keys), charged one token per instance
                     (ratelimit.py); a request beyond it is refused with 429 and Retry-After, not run (`limit`)
    top_class_only   answers carry a one-hot of the top class instead of the model's scores (`top_class`), and
                     :explain is refused (403): an attribution map is a gradient of the scores
    api_keys         several keys, each a client of its own (its own bucket, its own label in the metrics)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route

from helpers import signing
from helpers.serving import demo, openapi, rollout, routes_ops, routes_repository, routes_tfserving, routes_v2
from helpers.serving.batching import BatcherClosed, DirectCalls, DynamicBatcher, QueueFull
from helpers.serving.drift import DriftMonitor, drift_score
from helpers.serving.http import SERVER_VERSION, FastRoute, check_model_name, json_response
from helpers.serving.http import parse_version as parse_version  # importable from here, as before the split
from helpers.serving.metrics import ServerMetrics
from helpers.serving.protocols import RequestError
from helpers.serving.ratelimit import RateLimiter, client_label, default_burst, retry_after
from helpers.serving.repository import ModelNotFound, ModelRepository, VersionNotReady

log = logging.getLogger("helpers.serving")
MAX_COUNTED_CLASSES = 100  # outputs with more columns are not counted by class: a series per class would be too many


@dataclass(frozen=True)
class Settings:
    repository: Path
    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024  # a 5 MB request is refused with 413
    max_batch_size: int = 256  # instances per request
    request_timeout_s: float = 10.0  # for a request waiting for its model: in a batch queue or the thread pool
    max_queue: int = 256  # requests waiting per model version (in its batch queue, or unbatched calls in the thread
    # pool); one more is answered 503 with Retry-After at once (0: no limit)
    inline_below_us: float = 200.0  # without batching, a model whose one-row call is faster runs on the event loop
    batching: bool = False
    batch_max_size: int = 32  # rows per runtime call when batching
    batch_max_delay_ms: float = 2.0
    poll_interval_s: float = 1.0  # how often the repository is scanned for new versions
    drift_window: int = 50  # outputs per drift test, for versions that ship a drift reference (chapter 07)
    drift_alpha: float = 0.01  # a window is flagged as drifted when its test's p-value is below this
    demo: bool = False  # serve the browser demo under /demo/ (chapter 09)
    metrics_need_key: bool = False  # /metrics lists every model and version: behind the API key when the server is
    # reachable from the network (python -m helpers.serving decides: see its --metrics-access)
    worker: int | None = None  # with --workers N: this process's index, 0 to N-1 (workers.py); None: the only process
    api_keys: tuple[str, ...] = ()  # more keys (--api-key-file with one per line): any of them, or api_key, is accepted
    trusted_key: Path | None = None  # a public key (PEM): serve only versions signed by it (helpers.signing)
    rate_limit: float = 0.0  # instances per second per client (0: no limit); see ratelimit.py
    rate_burst: int | None = None  # the bucket's size, in instances (None: ratelimit.default_burst(rate_limit))
    top_class_only: bool = False  # answer a one-hot of the top class, never the model's scores (`top_class`)
    max_explain_instances: int = 16  # instances per :explain request: each costs Integrated Gradients' steps of
    # forward and backward passes, tens of predictions

    def keys(self) -> tuple[str, ...]:
        """Every API key the server accepts (empty: none needed)."""
        return tuple(dict.fromkeys([*([self.api_key] if self.api_key else []), *self.api_keys]))

    def burst(self) -> int:
        return self.rate_burst if self.rate_burst is not None else default_burst(self.rate_limit)


def create_app(settings: Settings) -> FastPath:
    """The ASGI app, from one table of routes: a route is added in its module's `routes()` only, and its class says
    who serves it (FastRoute: FastPath; Route and FastAPI's APIRoute: the FastAPI app)."""
    server = Server(settings)
    table = [*routes_v2.routes(server), *routes_tfserving.routes(server), *routes_repository.routes(server),
             *routes_ops.routes(server), *openapi.routes(server), *(demo.routes(server) if settings.demo else [])]
    app = FastAPI(title="deploy-dl-course inference server", version=SERVER_VERSION, lifespan=server.lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None, exception_handlers={StarletteHTTPException: http_error},
                  routes=[r for r in table if not isinstance(r, FastRoute)])
    app.state.server = server  # for whoever holds the app only (tests, demo.add_routes); routes are given it
    fast = [r for r in table if isinstance(r, FastRoute)]
    return FastPath(app, fast) if settings.worker is None else WorkerPath(app, fast, settings.worker)


class TooManyRequests(RequestError):
    """429 with Retry-After: the client's rate limit (--rate-limit) has no tokens left for this request, which was not
    run and cost nothing; Retry-After is when there will be enough (whole seconds, rounded up)."""

    def __init__(self, message: str, seconds: float):
        super().__init__(429, message)
        self.headers = {"Retry-After": str(retry_after(seconds))}


class RetryLater(RequestError):
    """503 with Retry-After: the request was not run (its version's queue was full, or the version closing) and a retry
    can succeed. RETRY_AFTER_S is a hint for well-behaved clients; the queue drains in far less under normal load."""

    RETRY_AFTER_S = 1

    def __init__(self, message: str):
        super().__init__(503, message)
        self.headers = {"Retry-After": str(self.RETRY_AFTER_S)}


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


class WorkerPath(FastPath):
    """FastPath for one of several workers (--workers N): every answer names the worker that gave it in a
    `Server-Worker` header (its index, 0 to N-1, not its pid), so a client, a test or an operator can tell which
    process answered; the kernel picks a worker per connection, so every answer on one connection names the same."""

    HEADER = b"server-worker"

    def __init__(self, app: FastAPI, routes: list[Route], worker: int):
        super().__init__(app, routes)
        self.header = (self.HEADER, str(worker).encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)

        async def named(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await super().__call__(scope, receive, named)


class Server:
    """The state behind the routes: repository, callers (batchers or direct), drift monitors, metrics, settings.

    With --workers N, each worker is a process with a Server of its own, and all of this is per worker: its own
    repository watcher (it verifies, loads and warms every version itself, and swaps it in on its own scan, so for up
    to a poll interval two workers may serve different latest versions), its callers and queues (max_queue is per
    worker), its drift monitors (each tests windows of the outputs it computes), its readiness. Only the metrics are
    the server's as a whole (ServerMetrics(multiprocess=True): counters summed across workers)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = ServerMetrics(multiprocess=settings.worker is not None)  # workers share their metrics' files
        # (key, its label): compared one by one in `authorize`; the label names the client in metrics, never the key,
        # and keys its rate-limit bucket (two keys sharing 32 bits of sha256 would share one: a 1 in 4e9 chance a pair)
        self.keys = [(key, client_label(key)) for key in settings.keys()]
        if settings.trusted_key is not None:
            signing.check_public_key(settings.trusted_key)  # a wrong file stops the server here, not at every version
            signing.prepare()
        self.repository = ModelRepository(settings.repository, on_load=self.count_load,
                                          verify=self.verify_signature if settings.trusted_key is not None else None)
        self.limiter = RateLimiter(settings.rate_limit, settings.burst()) if settings.rate_limit > 0 else None
        # id(version state) -> (state, its DynamicBatcher or DirectCalls); the state is kept so its id stays unique
        self.callers: dict[int, tuple] = {}
        self.drift_monitors: dict[int, tuple] = {}  # id(version state) -> (state, its DriftMonitor), likewise
        # unbatched calls of slow models, one thread per core (a call is CPU work: more threads would only wait); its
        # own pool, so that inferences never hold up a load's scan (the default pool)
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="inference")
        self.closing: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks: these are the strong ones
        self.stop = threading.Event()
        self.shadow = rollout.Shadow(self.count_shadow)  # copies of requests for a shadow version, run in its own thread

    @asynccontextmanager
    async def lifespan(self, app):
        """Start-up: the first scan (in a thread: loading warms models up), then a thread that rescans every
        poll_interval_s, and a task that closes the callers of versions gone. Shutdown: stop both, close the callers
        (a batcher answers what it holds first)."""
        await asyncio.get_running_loop().run_in_executor(None, self.repository.scan)
        self.repository.watch(self.settings.poll_interval_s, self.stop)
        sweeper = asyncio.get_running_loop().create_task(self.sweep())
        yield
        self.stop.set()
        sweeper.cancel()
        await asyncio.gather(*(caller.close() for _, caller in self.callers.values()), *self.closing)
        self.pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.shadow.close)

    async def sweep(self) -> None:
        """Close the callers of versions unloaded, replaced or deleted, within a poll interval: otherwise a batcher
        (and its thread) would live on until another version's first request."""
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            self.close_unloaded()

    def count_load(self, model: str, version: int, ok: bool) -> None:
        self.metrics.model_loads.labels(model, str(version), "success" if ok else "failure").inc()

    def verify_signature(self, model: str, version: int, directory: Path) -> None:
        """The repository's check before loading a version (with --trusted-key): raise SignatureError unless the folder
        is signed by the trusted key, exactly as it is on disk. Runs in the scanning thread, never on the event loop
        (it hashes every file). Counted by outcome, timed, and logged with its time: a version refused here is also
        logged and counted as a failed load by the repository, with the error its status reports."""
        started, outcome = time.perf_counter(), "invalid"  # anything unforeseen (an unreadable file) is a failure
        try:
            signing.verify_version(directory, self.settings.trusted_key)
            outcome = "valid"
        except signing.SignatureError as error:
            outcome = error.outcome
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.signature_checks.labels(model, outcome).inc()
            self.metrics.signature_seconds.labels(model).observe(seconds)
            log.log(logging.INFO if outcome == "valid" else logging.ERROR, "model %s version %d: signature %s (checked "
                    "in %.1f ms against %s)", model, version, outcome, seconds * 1e3, self.settings.trusted_key)

    def count_shadow(self, model: str, served: int, shadow: int, outcome: str, rows: int) -> None:
        self.metrics.child(self.metrics.shadow, model, str(served), str(shadow), outcome).inc(rows)

    def refresh_gauges(self) -> None:
        self.metrics.versions_available.clear()  # models removed or unloaded disappear from the metric
        self.metrics.versions_failed.clear()
        self.metrics.config_errors.clear()
        for model, versions in dict(self.repository.models).items():
            self.metrics.config_errors.labels(model).set(float(bool(getattr(versions, "config_error", ""))))
            self.metrics.versions_available.labels(model).set(sum(s.state == "AVAILABLE" for s in versions.values()))
            # a gauge, not an increase() of model_loads_total: a counter series born at 1 shows no increase
            self.metrics.versions_failed.labels(model).set(sum(s.failed for s in versions.values()))
        self.refresh_plan_gauges()

    def refresh_plan_gauges(self) -> None:
        """Where each loaded version's unbatched calls run, and the timed call that decided it."""
        self.metrics.runs_inline.clear()
        self.metrics.call_seconds.clear()
        for model, versions in dict(self.repository.models).items():
            for state in versions.values():
                caller = self.callers.get(id(state), (None, None))[1]
                if isinstance(caller, DirectCalls) and caller.inline is not None:
                    self.metrics.runs_inline.labels(model, str(state.version)).set(float(caller.inline))
                    self.metrics.call_seconds.labels(model, str(state.version)).set(caller.call_s)

    # ------------------------------------------------------------------ checks shared by the routes

    def authorize(self, request: Request) -> str | None:
        """The label of the client's key ("key-" and 8 hex digits: ratelimit.client_label), None if the server has no
        key; a missing or unknown key is refused with 401."""
        if not self.keys:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = (request.headers.get("x-api-key") or (token.strip() if scheme.lower() == "bearer" else "")).encode()
        matched = None
        for key, label in self.keys:  # every key compared, each in constant time: no guessing a key byte by byte
            if hmac.compare_digest(given, key.encode()):
                matched = label
        if matched is None:
            raise RequestError(401, "missing or invalid API key (send 'Authorization: Bearer <key>' or 'X-API-Key: <key>')")
        return matched

    def limit(self, request: Request, client: str | None, model: str, rows: int | None = None) -> None:
        """With --rate-limit: charge `rows` instances to the client's bucket (its key's, else its address's), or refuse
        the request (429 + Retry-After, nothing charged). `rows=None`, before the body is read: refuse at once a client
        without even one token left, so that an empty bucket costs no parsing. A request of more rows than the
        bucket holds could never pass: 400, saying how many it may carry."""
        if self.limiter is None:
            return
        burst = self.limiter.burst
        if rows is not None and rows > burst:
            raise RequestError(400, f"this request carries {rows} instances, but the server's rate limit "
                                    f"({self.limiter.rate:g} instances per second, bursts of {burst}) admits at most "
                                    f"{burst} per request: send at most {burst} per request")
        bucket = client or f"address:{request.client.host if request.client else 'unknown'}"
        wait = self.limiter.wait(bucket, 1) if rows is None else self.limiter.take(bucket, rows)
        if wait > 0:
            known = model if model in self.repository.models else "unknown"  # no metric series made up by clients
            self.metrics.child(self.metrics.rate_limited, known, client or "anonymous").inc()
            raise TooManyRequests(f"rate limit exceeded: {self.limiter.rate:g} instances per second, bursts of {burst}, "
                                  f"per {'API key' if client else 'client address'}; this request was not run, retry "
                                  f"in {wait:.2f} s", wait)

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

    def lookup(self, model: str, version: int | None, label: str | None = None):
        try:
            return self.repository.get(check_model_name(model), version, label)
        except ModelNotFound as error:
            raise RequestError(404, str(error)) from None
        except VersionNotReady as error:
            raise RequestError(503, str(error)) from None

    def target(self, model: str, version: int | None, label: str | None, request: Request):
        """(the version state that answers an inference request, the shadow version to copy it to or None). A request
        naming a version or a label gets it; one naming neither is routed by the model's traffic split (rollout.choose,
        sticky on its X-Routing-Key header) and copied to its shadow version, if the model's config.json names them."""
        if version is not None or label is not None:
            return self.lookup(model, version, label), None
        try:
            versions = self.repository.entry(check_model_name(model))
            state, chosen = rollout.choose(versions, request.headers.get(rollout.ROUTING_HEADER))
        except ModelNotFound as error:
            raise RequestError(404, str(error)) from None
        except LookupError:
            raise RequestError(503, f"model '{model}' has no available version") from None
        if chosen is not None:
            self.metrics.child(self.metrics.routed, model, chosen, str(state.version)).inc()
        return state, rollout.shadow_state(versions, state)

    # ------------------------------------------------------------------ the one inference path

    async def infer(self, model: str, state, x: np.ndarray, shadow=None) -> np.ndarray:
        """The model's outputs for `x` (validated by the protocol's parser), batched with other requests if enabled,
        within the request timeout; timed, counted by top class, and watched for drift; copied to the `shadow` version
        (off the request path) once answered. Refused at once (503, Retry-After) when the version's queue is full or
        it was closed before the request could run."""
        started = time.perf_counter()
        try:
            y = await self.call(model, state, x)
        except TimeoutError:
            raise RequestError(504, f"inference took longer than {self.settings.request_timeout_s} s") from None
        except QueueFull as error:
            self.metrics.child(self.metrics.shed, model).inc()
            raise RetryLater(f"model '{model}' version {state.version} is overloaded ({error}); retry later") from None
        except BatcherClosed:
            raise RetryLater(f"model '{model}' version {state.version} was replaced or unloaded before this request "
                             "could run; retry") from None
        except Exception as error:  # inputs were validated before, so this is the server's failure: 500, logged, keep serving
            log.exception("inference failed for model %s version %d", model, state.version)
            raise RequestError(500, f"inference failed: {type(error).__name__}: {str(error)[:300]}") from None
        self.metrics.child(self.metrics.inference_latency, model, str(state.version)).observe(time.perf_counter() - started)
        y = np.asarray(y)
        self.count_classes(model, state, y)
        if state.backend.drift_reference is not None and self.settings.drift_window > 0:
            self.watch_drift(model, state, y)
        if shadow is not None:
            self.shadow.submit(model, shadow, state.version, x, y)
        return top_class(y) if self.settings.top_class_only else y

    async def explain(self, model: str, state, x: np.ndarray, method: str, targets, steps: int):
        """The version's explainer run on `x` in the thread pool (it takes milliseconds to seconds: never on the event
        loop), within the request timeout; timed by method. Not counted by class, not watched for drift, not shadowed:
        those describe what the server answers, and an explanation answers no prediction."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                explanation = await asyncio.get_running_loop().run_in_executor(
                    self.pool, state.backend.explainer.explain, x, method, targets, steps)
        except TimeoutError:
            raise RequestError(504, f"explanation took longer than {self.settings.request_timeout_s} s; send fewer "
                                    "instances or fewer steps") from None
        except Exception as error:  # inputs were validated: the server's failure, logged, and it keeps serving
            log.exception("explanation failed for model %s version %d", model, state.version)
            raise RequestError(500, f"explanation failed: {type(error).__name__}: {str(error)[:300]}") from None
        self.metrics.child(self.metrics.explain_latency, model, str(state.version), method).observe(
            time.perf_counter() - started)
        return explanation

    def count_classes(self, model: str, state, y: np.ndarray) -> None:
        """Count a classifier's answers by top class, per version: comparing two versions' class mixes on live traffic
        is how a canary that answers wrongly (without a single error) gets caught (chapter 11)."""
        if y.ndim != 2 or not 2 <= y.shape[1] <= MAX_COUNTED_CLASSES:
            return
        top, version = y.argmax(1), str(state.version)
        if len(top) == 1:  # the common case, without np.unique's sort
            self.metrics.child(self.metrics.predictions, model, version, str(int(top[0]))).inc()
            return
        for label, rows in zip(*np.unique(top, return_counts=True)):
            self.metrics.child(self.metrics.predictions, model, version, str(int(label))).inc(int(rows))

    async def call(self, model: str, state, x: np.ndarray) -> np.ndarray:
        """Run the model through this version's caller; anything that waits does so within the request timeout."""
        caller = self.caller(model, state)
        if caller is None:  # swapped out since its lookup: its own backend answers it, once, in the pool
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await asyncio.get_running_loop().run_in_executor(self.pool, state.backend.predict, x)
        batched = isinstance(caller, DynamicBatcher)  # per model: its config.json may turn batching on or off
        if batched:
            self.metrics.child(self.metrics.queue_depth, model).set(caller.depth())
        if caller.inline:  # tens of microseconds and no suspension: a timer would cost more than it could catch
            y = caller.predict(x)
        else:
            async with asyncio.timeout(self.settings.request_timeout_s):
                y = await caller.submit(x)
        if not batched:  # a batcher counts its own calls (on_batch), each carrying several requests
            self.metrics.child(self.metrics.batch_size, model).observe(len(x))
        return y

    def caller(self, model: str, state) -> DynamicBatcher | DirectCalls | None:
        """The caller of this loaded version, made on its first request. A version reloaded under the same number is a
        new state with a new backend, so callers belong to states; those of states no longer loaded are closed here
        and by `sweep`. None for a state that is no longer the repository's (swapped out between the request's lookup
        and now): a caller made for it would never be closed."""
        entry = self.callers.get(id(state))
        if entry is not None:
            return entry[1]
        if self.repository.models.get(model, {}).get(state.version) is not state:
            return None
        self.close_unloaded()
        self.callers[id(state)] = (state, self.new_caller(model, state))
        return self.callers[id(state)][1]

    def new_caller(self, model: str, state) -> DynamicBatcher | DirectCalls:
        """The caller for a version, from the model's effective settings: the global Settings overridden by its
        config.json, which the state carries (`state.calls`): a config change makes new states, so new callers."""
        calls, backend = state.calls.effective(self.settings), state.backend
        if calls.batching:
            histogram = self.metrics.child(self.metrics.batch_size, model)
            return DynamicBatcher(backend.predict, calls.max_batch_size, calls.max_delay_ms,
                                  on_batch=histogram.observe, max_queue=calls.max_queue)

        def planned(inline: bool, seconds: float) -> None:  # once per version; chapter 06 reads the line and the gauges
            log.info("model %s version %d: a one-row call takes %.0f µs, so its unbatched calls run %s", model,
                     state.version, seconds * 1e6, "inline on the event loop" if inline else "in the thread pool")

        example = np.zeros((1, *backend.input.shape[1:]), np.float32)  # the warm-up input
        return DirectCalls(backend.predict, example, self.pool, calls.max_queue, self.settings.inline_below_us / 1e6,
                           on_plan=planned)

    def close_unloaded(self) -> None:
        for stale in self.forget_unloaded(self.callers):
            task = asyncio.get_running_loop().create_task(stale.close())
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)

    def forget_unloaded(self, cache: dict) -> list:
        """Drop and return the entries of a per-version-state `cache` (id(state) -> (state, thing)) whose state is no
        longer loaded: callers and drift monitors belong to a loaded version, not to a version number."""
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
        labels = {"model": "", "version": ""}  # the handler fills them in as it learns them (and may name its endpoint)
        try:
            response = await handler(self, request, labels)
        except RequestError as error:
            headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else getattr(error, "headers", None)
            response = json_response({"error": error.message}, error.status, headers=headers)
        except ClientDisconnect:  # the client left mid-upload: nobody reads this answer, and it is not a server bug
            response = json_response({"error": "client disconnected before sending the whole request"}, 400)
        except Exception as error:  # a bug must still answer, as JSON, and be logged
            log.exception("unexpected error in %s", endpoint)
            response = json_response({"error": f"internal error: {type(error).__name__}"}, 500)
        # a name the repository does not know is counted as "unknown": clients must not be able to create metric series
        model = labels["model"] if not labels["model"] or labels["model"] in self.repository.models else "unknown"
        endpoint = labels.get("endpoint", endpoint)  # :explain shares :predict's route, not its name
        self.metrics.child(self.metrics.requests, model, labels["version"], endpoint, str(response.status_code)).inc()
        self.metrics.child(self.metrics.request_latency, endpoint).observe(time.perf_counter() - started)
        return response


def top_class(y: np.ndarray) -> np.ndarray:
    """--top-class-only: each row's scores replaced by a one-hot of its top class, in the same shape and dtype, so
    that clients reading `argmax` keep working. Why: a model-extraction attack (chapter 12) trains a copy of the model
    on its answers, and ten scores per query teach the copy far more than one label (how sure the model is, which
    classes it confuses), so the same copy needs many more queries without them; the answers' top class is unchanged.
    Counting by class, drift monitoring and shadow comparisons see the real scores (Server.infer applies this last).
    An output with fewer than two columns (a single score) is returned as it is: there is no class to pick."""
    if y.ndim < 2 or y.shape[-1] < 2:
        return y
    one_hot = np.zeros_like(y)
    np.put_along_axis(one_hot, y.argmax(axis=-1)[..., None], 1, axis=-1)
    return one_hot
