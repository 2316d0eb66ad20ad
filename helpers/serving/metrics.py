"""The server's Prometheus metrics (served at /metrics; chapter 07 scrapes them). Each server has its own registry.

Besides requests, latencies and model loads: how a version's calls are run (inference_runs_inline and the timed call
that decided it, inference_call_seconds; chapter 06) and the requests shed when a version's queue is full
(inference_shed_total: each was answered 503 with Retry-After), the time :explain takes (inference_explain_duration_seconds, chapter 13), the requests refused by the rate limit
(inference_rate_limited_total: 429 with Retry-After), the signature checks before loading (model_signature_checks_total
and model_signature_verify_seconds, with --trusted-key), the models whose config.json is refused
(model_config_errors), and, below the app, the connections closed by the limits on slow or greedy clients
(http_connections_closed_total; connections.py).

With --workers N (N > 1; workers.py), each worker is a process of its own, and `ServerMetrics(multiprocess=True)`
keeps its metrics in the files of prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, a fresh folder per
server start): the worker answering a scrape reports every worker's, merged by a MultiProcessCollector. Counters and
histograms add up across workers, a dead worker's included (what it answered was answered; model_loads_total
counts each worker's own load of a version, so N per version), and have no `_created` samples. Each gauge says how the
workers' values combine (`multiprocess_mode`; the "live" modes forget a worker that died, which workers.py marks dead):

    inference_queue_depth           livesum         requests waiting in all the workers together
    model_drift_score               livemostrecent  the last window of outputs any worker tested: each worker runs its
    model_window_confidence                         own drift monitor on the requests it answers (a window is
    model_drift_flagged_in_a_row                    drift_window of one worker's outputs); the three are set together,
                                                    so they describe the same window

Five gauges are not shared: they describe state that goes away (a version unloaded, a model removed), which the
shared files cannot forget, so they are computed at each scrape from the answering worker's own state, as with one
process (`state_gauge`; a LocalGauge). model_versions_available, model_versions_failed and model_config_errors are
what that worker's scans found (every worker scans the same repository: they agree within a poll interval);
inference_runs_inline and inference_call_seconds are that worker's own decision (each worker times a version's first
call itself, and on a busy machine two may decide differently).

With one process (the default) there are no files: one registry in memory, the `multiprocess_mode`s unused."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SIGNATURE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # hashing GBs: s


class ServerMetrics:
    def __init__(self, multiprocess: bool = False):
        """`multiprocess`: this process is one of the server's workers (PROMETHEUS_MULTIPROC_DIR set before
        prometheus_client was first imported): `registry`, what /metrics reports, reads every worker's files."""
        self.children = {}
        self.registry = CollectorRegistry()  # what /metrics reports
        self.multiprocess = multiprocess
        into = self.registry  # where the metrics are registered
        if multiprocess:
            from prometheus_client import values
            from prometheus_client.multiprocess import MultiProcessCollector

            if not getattr(values.ValueClass, "_multiprocess", False):
                raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: this "
                                   "worker's metrics would stay in its memory, where no scrape of another worker sees them")
            MultiProcessCollector(self.registry)  # this worker's metrics too: they are in its file
            into = CollectorRegistry()  # registered there only to catch a name used twice; never reported
        self.requests = Counter("inference_requests_total", "Requests answered, by model, version, endpoint and HTTP status",
                                ["model", "version", "endpoint", "code"], registry=into)
        self.request_latency = Histogram("inference_request_duration_seconds", "Time from request to response, by endpoint",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=into)
        self.inference_latency = Histogram("inference_model_duration_seconds", "Time in the model (batch wait included), by model",
                                           ["model", "version"], buckets=LATENCY_BUCKETS, registry=into)
        self.batch_size = Histogram("inference_batch_size", "Rows per runtime call", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=into)
        self.queue_depth = Gauge("inference_queue_depth", "Requests waiting for a batch", ["model"], registry=into,
                                 multiprocess_mode="livesum")
        self.shed = Counter("inference_shed_total", "Requests refused with 503 + Retry-After because their version's queue "
                            "(or its unbatched calls in the thread pool) was full, by model", ["model"], registry=into)
        self.runs_inline = self.state_gauge("inference_runs_inline", "1: the version's unbatched calls run inline on the "
                                            "event loop, 0: in the thread pool (decided by inference_call_seconds)",
                                            ["model", "version"])
        self.call_seconds = self.state_gauge("inference_call_seconds", "A one-row call's duration, timed at the version's "
                                             "first unbatched request", ["model", "version"])
        self.model_loads = Counter("model_loads_total", "Model version loads, by result", ["model", "version", "result"],
                                   registry=into)
        self.drift_score = Gauge("model_drift_score", "-log10 p-value of the drift test on the last window of outputs "
                                 "(2: p = 0.01), by model", ["model"], registry=into,
                                 multiprocess_mode="livemostrecent")
        self.drift_windows = Counter("model_drift_windows_total", "Windows of outputs tested for drift", ["model"],
                                     registry=into)
        self.drift_in_a_row = Gauge("model_drift_flagged_in_a_row", "Consecutive windows flagged as drifted (p < alpha), "
                                    "0 after a window that was not", ["model"], registry=into,
                                    multiprocess_mode="livemostrecent")
        self.drift_errors = Counter("model_drift_errors_total", "Drift tests that failed (logged; the request was answered)",
                                    ["model"], registry=into)
        self.window_confidence = Gauge("model_window_confidence", "Mean top-class probability in the last window: an "
                                       "estimate of accuracy before labels arrive", ["model"], registry=into,
                                       multiprocess_mode="livemostrecent")
        self.versions_available = self.state_gauge("model_versions_available", "Versions able to answer, by model",
                                                   ["model"])
        # incremented by the connection limits (connections.py), below the app: uvicorn's protocol is given this counter
        self.connections_closed = Counter("http_connections_closed_total", "Connections the server closed because a "
                                          "client passed a limit (too slow to send its headers or body, headers too "
                                          "large, too many connections from its address), by reason", ["reason"],
                                          registry=into)
        self.versions_failed = self.state_gauge("model_versions_failed", "Versions whose files failed to load (refused, "
                                                "or refused on reload while the copy loaded before keeps serving), by "
                                                "model", ["model"])
        self.routed = Counter("inference_routed_total", "Requests naming no version, by the traffic split's label that "
                              "chose their version (chapter 11)", ["model", "label", "version"], registry=into)
        self.predictions = Counter("inference_predictions_total", "Rows answered by a classifier, by model, version and "
                                   "top class", ["model", "version", "class"], registry=into)
        self.shadow = Counter("inference_shadow_total", "Rows copied to a shadow version, by the version that answered "
                              "them, the shadow version and the outcome: agree or disagree (top class), error (the shadow "
                              "failed), dropped (its queue was full)", ["model", "version", "shadow_version", "outcome"],
                              registry=into)
        self.signature_checks = Counter("model_signature_checks_total", "Signature checks of version folders before "
                                        "loading (with --trusted-key), by model and outcome: valid, missing, invalid "
                                        "(files changed, or the signature edited), wrong_key (signed by another key)",
                                        ["model", "outcome"], registry=into)
        self.signature_seconds = Histogram("model_signature_verify_seconds", "Time to check a version's signature "
                                           "(hashing every file), by model", ["model"], buckets=SIGNATURE_BUCKETS,
                                           registry=into)
        self.rate_limited = Counter("inference_rate_limited_total", "Requests refused with 429 by the rate limit "
                                    "(--rate-limit), by model and client: key- and 8 hex digits of the API key's "
                                    "sha256, or anonymous", ["model", "client"], registry=into)
        self.explain_latency = Histogram("inference_explain_duration_seconds", "Time to compute a request's "
                                         "explanations (:explain), by model, version and method", ["model", "version",
                                         "method"], buckets=LATENCY_BUCKETS, registry=into)
        self.config_errors = self.state_gauge("model_config_errors", "1 while the model's config.json is refused (the "
                                              "config in force before it still applies; the status endpoints say why), "
                                              "else 0", ["model"])

    def state_gauge(self, name: str, documentation: str, labels: list[str]):
        """A gauge of state that `Server.refresh_gauges` sets afresh at each scrape: a Gauge in the registry, or with
        workers a LocalGauge of this worker's own (see the module's docstring)."""
        if not self.multiprocess:
            return Gauge(name, documentation, labels, registry=self.registry)
        gauge = LocalGauge(name, documentation, labels)
        self.registry.register(gauge)
        return gauge

    def child(self, metric, *labels):
        """metric.labels(*labels), remembered: the lookup costs a few microseconds per call, on every request."""
        key = (id(metric), labels)
        if key not in self.children:
            self.children[key] = metric.labels(*labels)
        return self.children[key]


class LocalGauge:
    """A labelled gauge kept in this worker's memory, never in the shared files, reported as it is at each scrape: the
    little of a Gauge that `refresh_gauges` uses (`labels(...).set`, `clear`), and a collector's `collect`."""

    def __init__(self, name: str, documentation: str, labelnames: list[str]):
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.values: dict[tuple[str, ...], float] = {}

    def labels(self, *values) -> LocalGaugeChild:
        return LocalGaugeChild(self.values, tuple(str(v) for v in values))

    def clear(self) -> None:
        self.values = {}

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return [family]


class LocalGaugeChild:
    def __init__(self, values: dict, labels: tuple[str, ...]):
        self.values, self.labels = values, labels

    def set(self, value: float) -> None:
        self.values[self.labels] = float(value)
