"""The server's Prometheus metrics (served at /metrics; chapter 07 scrapes them). Each server has its own registry.

Besides requests, latencies and model loads: how a version's calls are run (inference_runs_inline and the timed call
that decided it, inference_call_seconds; chapter 06) and the requests shed when a version's queue is full
(inference_shed_total: each was answered 503 with Retry-After), the models whose config.json is refused
(model_config_errors), and, below the app, the connections closed by the limits on slow or greedy clients
(http_connections_closed_total; connections.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServerMetrics:
    def __init__(self):
        self.children = {}
        self.registry = CollectorRegistry()
        self.requests = Counter("inference_requests_total", "Requests answered, by model, version, endpoint and HTTP status",
                                ["model", "version", "endpoint", "code"], registry=self.registry)
        self.request_latency = Histogram("inference_request_duration_seconds", "Time from request to response, by endpoint",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference_latency = Histogram("inference_model_duration_seconds", "Time in the model (batch wait included), by model",
                                           ["model", "version"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("inference_batch_size", "Rows per runtime call", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.queue_depth = Gauge("inference_queue_depth", "Requests waiting for a batch", ["model"], registry=self.registry)
        self.shed = Counter("inference_shed_total", "Requests refused with 503 + Retry-After because their version's queue "
                            "(or its unbatched calls in the thread pool) was full, by model", ["model"], registry=self.registry)
        self.runs_inline = Gauge("inference_runs_inline", "1: the version's unbatched calls run inline on the event loop, "
                                 "0: in the thread pool (decided by inference_call_seconds)", ["model", "version"],
                                 registry=self.registry)
        self.call_seconds = Gauge("inference_call_seconds", "A one-row call's duration, timed at the version's first "
                                  "unbatched request", ["model", "version"], registry=self.registry)
        self.model_loads = Counter("model_loads_total", "Model version loads, by result", ["model", "version", "result"],
                                   registry=self.registry)
        self.drift_score = Gauge("model_drift_score", "-log10 p-value of the drift test on the last window of outputs "
                                 "(2: p = 0.01), by model", ["model"], registry=self.registry)
        self.drift_windows = Counter("model_drift_windows_total", "Windows of outputs tested for drift", ["model"],
                                     registry=self.registry)
        self.drift_in_a_row = Gauge("model_drift_flagged_in_a_row", "Consecutive windows flagged as drifted (p < alpha), "
                                    "0 after a window that was not", ["model"], registry=self.registry)
        self.drift_errors = Counter("model_drift_errors_total", "Drift tests that failed (logged; the request was answered)",
                                    ["model"], registry=self.registry)
        self.window_confidence = Gauge("model_window_confidence", "Mean top-class probability in the last window: an "
                                       "estimate of accuracy before labels arrive", ["model"], registry=self.registry)
        self.versions_available = Gauge("model_versions_available", "Versions able to answer, by model", ["model"],
                                        registry=self.registry)
        # incremented by the connection limits (connections.py), below the app: uvicorn's protocol is given this counter
        self.connections_closed = Counter("http_connections_closed_total", "Connections the server closed because a "
                                          "client passed a limit (too slow to send its headers or body, headers too "
                                          "large, too many connections from its address), by reason", ["reason"],
                                          registry=self.registry)
        self.versions_failed = Gauge("model_versions_failed", "Versions whose files failed to load (refused, or refused "
                                     "on reload while the copy loaded before keeps serving), by model",
                                     ["model"], registry=self.registry)
        self.config_errors = Gauge("model_config_errors", "1 while the model's config.json is refused (the config in force "
                                   "before it still applies; the status endpoints say why), else 0", ["model"],
                                   registry=self.registry)

    def child(self, metric, *labels):
        """metric.labels(*labels), remembered: the lookup costs a few microseconds per call, on every request."""
        key = (id(metric), labels)
        if key not in self.children:
            self.children[key] = metric.labels(*labels)
        return self.children[key]
