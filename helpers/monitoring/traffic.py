"""A simulated production day against the running inference server. `Traffic` sends windows of images from a
background thread, one KServe v2 request (binary tensors) per image, each window spread over a chosen number of
seconds; it records every answer (time, latency, HTTP status, serving version, prediction, confidence, label) and,
after each window, the server's drift score read from /metrics. `Traffic.frames()` turns the record into the
per-request and per-window tables the chapter's dashboard plots. A failed request is recorded, never raised.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from helpers.monitoring.prometheus import metric, read_metrics
from helpers.serving.client import infer_request, parse_infer_response
from helpers.serving.drift import softmax
from helpers.serving.protocols import BINARY_HEADER


class Traffic:
    """A production day's traffic from a background thread: `windows` is a list of (uint8 images, labels); each image
    is one KServe v2 request (binary tensors), each window is spread over `window_seconds`. Every answer is recorded
    (time, latency, HTTP status, serving version, prediction, confidence, label), and after each window the server's
    drift score is read from /metrics. A failed request is recorded, never raised: the day goes on."""

    def __init__(self, url: str, model: str, windows: list, window_seconds: float = 1.0):
        self.url, self.model, self.windows, self.window_seconds = url, model, windows, window_seconds
        self.requests, self.scores = [], []
        self.started, self.end = None, len(windows)  # set `end` (a window index) to stop the day early
        self.thread = threading.Thread(target=self.run, name="traffic", daemon=True)

    def start(self) -> "Traffic":
        self.started = time.time()
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def window_now(self) -> int:
        return len(self.scores)

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=10) as http:
            for k, (images, labels) in enumerate(self.windows):
                if k >= self.end:
                    break
                window_start = self.started + k * self.window_seconds
                for i, (image, label) in enumerate(zip(images, labels)):
                    time.sleep(max(0.0, window_start + i * self.window_seconds / len(images) - time.time()))
                    body, headers = infer_request(image[None, None].astype(np.float32) / 255.0, "images", binary=True)
                    sent = time.perf_counter()
                    row = {"window": k, "t": time.time(), "label": int(label), "status": 0, "version": None, "predicted": -1,
                           "confidence": np.nan}
                    try:
                        response = http.post(f"/v2/models/{self.model}/infer", content=body, headers=headers)
                        row["status"] = response.status_code
                        if response.status_code == 200:
                            answer = parse_infer_response(response.content, response.headers.get(BINARY_HEADER))
                            probabilities = softmax(next(iter(answer["outputs"].values())))[0]
                            row.update(version=int(answer["model_version"]), predicted=int(probabilities.argmax()),
                                       confidence=float(probabilities.max()))
                    except Exception as error:  # connection refused, timeout, a garbled answer: a failed request
                        row["error"] = f"{type(error).__name__}: {error}"[:200]
                    row["seconds"] = time.perf_counter() - sent
                    self.requests.append(row)
                try:
                    values = read_metrics(self.url)
                except Exception:  # the day goes on; this window's server-side numbers are missing
                    values = {}
                self.scores.append({"window": k, "t": time.time(), "drift_score": metric(values, "model_drift_score", model=self.model)})

    def frames(self):
        """(per request, per window) DataFrames."""
        import pandas as pd

        requests = pd.DataFrame(self.requests)
        requests["correct"] = requests["predicted"] == requests["label"]
        per_window = requests.groupby("window").agg(t=("t", "min"), accuracy=("correct", "mean"), failed=("status", lambda s: int((s != 200).sum())),
                                                    p99_ms=("seconds", lambda s: 1000 * s.quantile(0.99)), version=("version", "max"),
                                                    confidence=("confidence", "mean"))
        return requests, per_window.join(pd.DataFrame(self.scores).set_index("window")[["drift_score"]])
