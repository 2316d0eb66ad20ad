"""Watching a deployed model (chapter 07): a real Prometheus, and data-drift detectors measured as detectors should be.

Prometheus: `running_prometheus(targets)` writes a scrape configuration (with the course's alerting rules,
`monitoring/alerts.yml`), starts the `prometheus` binary on a free 127.0.0.1 port with its data under
`artifacts/prometheus/`, and stops it when the block ends; `query`/`query_range` speak its HTTP API.

Drift: `SHIFTS` turn clean test images into drifted ones at a chosen severity; the detectors compare a window of
production data with a reference sample and return a p-value (small = "these do not come from the same distribution").
"""

from __future__ import annotations

import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from helpers import export, paths

RULES = paths.ROOT / "monitoring" / "alerts.yml"


# --------------------------------------------------------------------------- Prometheus


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def write_config(path: Path, targets: list[str], scrape_interval_s: float = 1.0, rules: Path | None = RULES) -> Path:
    """A minimal prometheus.yml: scrape `targets` (host:port) every `scrape_interval_s`, evaluate `rules` as often."""
    interval = f"{round(scrape_interval_s * 1000)}ms"  # Prometheus durations take integers: "1000ms", not "1.0s"
    lines = ["global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}"]
    if rules is not None:
        lines += ["rule_files:", f"  - {Path(rules).resolve()}"]
    lines += ["scrape_configs:", "  - job_name: inference-server", "    static_configs:",
              "      - targets: [" + ", ".join(f"'{t}'" for t in targets) + "]"]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def running_prometheus(targets: list[str], scrape_interval_s: float = 1.0, rules: Path | None = RULES):
    """A real Prometheus scraping `targets`; yields its URL. Its data lives under artifacts/prometheus/<port>/."""
    from helpers.serving.process import free_port, running

    if not prometheus_available():
        from helpers.fixes import with_fix

        raise FileNotFoundError(with_fix("prometheus is not installed", "prometheus"))
    port = free_port()
    home = paths.artifacts() / "prometheus" / str(port)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = write_config(home / "prometheus.yml", targets, scrape_interval_s, rules)
    command = [shutil.which("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"]
    try:
        with running(command, "/-/ready", "prometheus", port) as (url, _, _):
            yield url
    finally:
        shutil.rmtree(home, ignore_errors=True)  # its time series are only for this run


def api_result(url: str, endpoint: str, params: dict, timeout_s: float = 10):
    """The `data.result` of a Prometheus HTTP API answer, or a ValueError quoting Prometheus' own error."""
    import httpx

    answer = httpx.get(f"{url}/api/v1/{endpoint}", params=params, timeout=timeout_s).json()
    if answer["status"] != "success":
        raise ValueError(f"PromQL error for {params.get('query')!r}: {answer.get('error')}")
    return answer["data"]["result"]


def query(url: str, promql: str) -> list[dict]:
    """An instant query: [{"metric": labels, "value": float}, ...]."""
    return [{"metric": r["metric"], "value": float(r["value"][1])} for r in api_result(url, "query", {"query": promql})]


def query_range(url: str, promql: str, start: float, end: float, step_s: float = 1.0):
    """A range query as a DataFrame: one column per series (named by its labels), indexed by unix time."""
    import pandas as pd

    columns = {}
    for series in api_result(url, "query_range", {"query": promql, "start": start, "end": end, "step": step_s}, 30):
        name = ",".join(f"{k}={v}" for k, v in sorted(series["metric"].items())) or promql
        columns[name] = pd.Series({float(t): float(v) for t, v in series["values"]})
    return pd.DataFrame(columns)


def wait_for_first_scrape(url: str, timeout_s: float = 30.0) -> None:
    """Poll until Prometheus has scraped the server at least once (`up == 1`)."""
    wait_for_value(url, 'max(up{job="inference-server"})', 1, timeout_s)


def wait_for_value(url: str, promql: str, at_least: float, timeout_s: float = 30.0) -> float:
    """Poll an instant query until its first value reaches `at_least` (e.g. Prometheus has scraped the last window)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = query(url, promql)
        if answer and answer[0]["value"] >= at_least:
            return answer[0]["value"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{promql} did not reach {at_least} within {timeout_s} s (last answer: {answer})")
        time.sleep(0.2)


def alerts(url: str) -> list[dict]:
    """Active alerts with their state ("pending" or "firing")."""
    import httpx

    return httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


def record_alerts(url: str, seen: dict, **context) -> dict:
    """Note when each alert was first seen in each state: seen["DataDriftDetected firing"] = {"t": ..., **context}."""
    for alert in alerts(url):
        seen.setdefault(f"{alert['labels']['alertname']} {alert['state']}", {"t": time.time(), **context})
    return seen


def flagged_in_a_row(scores, threshold: float = 2.0, windows: int = 2) -> int | None:
    """The index of the first window ending a run of `windows` drift scores over `threshold` (2: p < 0.01): the drift
    alert's rule (monitoring/alerts.yml) evaluated in Python, for machines without Prometheus."""
    run = 0
    for k, score in enumerate(scores):
        run = run + 1 if score is not None and score > threshold else 0
        if run == windows:
            return k
    return None


# --------------------------------------------------------------------------- shifts: how production data drifts


def rotate(images: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Each image rotated by +/- `degrees` (random sign): writers slant their digits."""
    from scipy import ndimage

    signs = rng.choice([-1.0, 1.0], size=len(images))
    return np.stack([ndimage.rotate(im, s * degrees, reshape=False, order=1, mode="constant") for im, s in zip(images, signs)])


def noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sensor noise of standard deviation `sigma` (in 0-255 units)."""
    return np.clip(images + rng.normal(0.0, sigma, images.shape), 0, 255)


def dim(images: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness and contrast scaled down by `factor` (0 = unchanged, 1 = black): a worn pen, a dark scan."""
    return images * (1.0 - factor)


def blur(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of `sigma` pixels: an out-of-focus camera."""
    from scipy import ndimage

    return np.stack([ndimage.gaussian_filter(im.astype(np.float64), sigma) for im in images])


def thicken(images: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """Strokes made thicker by a grey dilation of `size` pixels (fractions blend with the original): a thicker pen."""
    from scipy import ndimage

    whole = int(np.floor(size))
    thick = images.astype(np.float64)
    for _ in range(whole):
        thick = ndimage.grey_dilation(thick, size=(1, 2, 2))
    if size > whole:
        thick = (1 - (size - whole)) * thick + (size - whole) * ndimage.grey_dilation(thick, size=(1, 2, 2))
    return thick


SHIFTS = {"rotation": rotate, "noise": noise, "dimming": dim, "blur": blur, "thickness": thicken}


def apply_shift(name: str, images: np.ndarray, severity: float, seed: int = 0) -> np.ndarray:
    """uint8 (N, 28, 28) images -> the same images drifted by `name` at `severity`, as uint8."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; choose one of {sorted(SHIFTS)}")
    shifted = SHIFTS[name](images.astype(np.float64), severity, np.random.default_rng(seed))
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def class_prior_shift(labels: np.ndarray, boosted: int, weight: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `n` samples where class `boosted` is `weight` times as likely as in `labels`: a change in who uses the app."""
    p = np.where(labels == boosted, weight, 1.0)
    return rng.choice(len(labels), size=n, replace=True, p=p / p.sum())


# --------------------------------------------------------------------------- detectors
#
# A detector is built from a reference sample (what the model saw when it was known to work) and called on a window of
# production rows; it returns a p-value: how likely a window at least this different would be if nothing had changed.
# Flagging windows with p < alpha gives false alarms on about alpha of undrifted windows, by construction.


class KSDetector:
    """Kolmogorov-Smirnov on each column (class probability, embedding coordinate), Bonferroni-corrected.

    KS compares two empirical CDFs: its statistic D is the largest vertical gap between them. Each column gets a
    p-value; Bonferroni multiplies the smallest by the number of columns, so that checking k columns does not give k
    chances of a false alarm. The reference is sorted once, so a window costs a few searchsorted calls."""

    def __init__(self, reference: np.ndarray):
        self.reference = np.sort(np.asarray(reference, np.float64).reshape(len(reference), -1), axis=0)

    def statistics(self, window: np.ndarray) -> np.ndarray:
        """D for each column. The window's CDF only steps at the window's own points, and the reference's CDF only
        rises between them, so the largest gap sits just before or at one of the window's points: m lookups into the
        sorted reference per column, not n + m."""
        window = np.sort(np.asarray(window, np.float64).reshape(len(window), -1), axis=0)
        n, m = len(self.reference), len(window)
        d = np.empty(window.shape[1])
        for j in range(window.shape[1]):
            w, ref = window[:, j], self.reference[:, j]
            below = np.searchsorted(ref, w, "left") / n - np.searchsorted(w, w, "left") / m  # just before each point
            at = np.searchsorted(w, w, "right") / m - np.searchsorted(ref, w, "right") / n  # at each point
            d[j] = max(below.max(), at.max())
        return d

    def __call__(self, window: np.ndarray) -> float:
        from scipy import stats

        n, m = len(self.reference), len(window)
        d = self.statistics(window)
        # the smallest p-value belongs to the largest D; scipy's ks_2samp(method="asymp") computes it the same way
        p = stats.kstwo.sf(d.max(), round(n * m / (n + m)))
        return float(min(1.0, p * len(d)))


def ks_test(reference: np.ndarray, window: np.ndarray) -> float:
    """One-off KS test (Bonferroni over columns); build a KSDetector to test many windows against one reference."""
    return KSDetector(reference)(window)


def psi(reference_classes: np.ndarray, window_classes: np.ndarray, n_classes: int = 10) -> float:
    """Population Stability Index of the predicted-class distribution: sum (q - p) ln(q / p). Rules of thumb read
    < 0.1 as stable and > 0.25 as a major shift; PSIDetector calibrates the threshold for the window size instead.
    Half a count is added to every class (Jeffreys smoothing): a class absent from a small window would otherwise put
    ln(0) into the sum, and the usual fix, a tiny floor, lets empty classes swamp the index."""
    p = (np.bincount(reference_classes, minlength=n_classes) + 0.5) / (len(reference_classes) + 0.5 * n_classes)
    q = (np.bincount(window_classes, minlength=n_classes) + 0.5) / (len(window_classes) + 0.5 * n_classes)
    return float(np.sum((q - p) * np.log(q / p)))


class PSIDetector:
    """PSI of the predicted classes with a p-value: how often windows of the same size drawn from the reference itself
    (a bootstrap) reach the observed PSI. A fixed "0.25" threshold would flag most small windows by chance alone."""

    def __init__(self, reference_classes: np.ndarray, draws: int = 1000, seed: int = 0):
        self.reference, self.draws, self.seed = np.asarray(reference_classes), draws, seed
        self.null: dict[int, np.ndarray] = {}  # window size -> PSI of `draws` undrifted windows

    def __call__(self, window_classes: np.ndarray) -> float:
        m = len(window_classes)
        if m not in self.null:
            rng = np.random.default_rng(self.seed)
            self.null[m] = np.array([psi(self.reference, rng.choice(self.reference, m)) for _ in range(self.draws)])
        return float((np.sum(self.null[m] >= psi(self.reference, window_classes)) + 1) / (self.draws + 1))


def squared_distances(z: np.ndarray) -> np.ndarray:
    """All pairwise squared Euclidean distances between the rows of `z`."""
    sq = np.sum(z**2, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)


def gaussian_kernel(z: np.ndarray, bandwidth: float) -> np.ndarray:
    return np.exp(-squared_distances(z) / (2 * bandwidth**2))


def median_bandwidth(x: np.ndarray) -> float:
    """The median pairwise distance, the usual default kernel width."""
    return float(np.median(np.sqrt(squared_distances(x))[np.triu_indices(len(x), 1)])) or 1.0


class MMDDetector:
    """Squared maximum mean discrepancy (MMD^2, Gaussian kernel, biased estimate: how far apart two samples' mean
    embeddings are in the kernel's feature space) with a permutation test: how often shuffling the pooled samples gives
    a discrepancy at least as large.
    Multivariate (it sees changes in how coordinates move together, which per-column KS misses), but each window costs
    a kernel matrix over reference + window, so the reference is kept small."""

    def __init__(self, reference: np.ndarray, permutations: int = 200, seed: int = 0):
        self.reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
        self.bandwidth = median_bandwidth(self.reference)
        self.permutations, self.rng = permutations, np.random.default_rng(seed)

    def __call__(self, window: np.ndarray) -> float:
        window = np.asarray(window, np.float64).reshape(len(window), -1)
        k = gaussian_kernel(np.concatenate([self.reference, window]), self.bandwidth)
        n, m = len(self.reference), len(window)
        # With weights a = (1/n for one group, -1/m for the other), MMD^2 = a.K.a: all permutations in one product.
        weights = np.concatenate([np.full(n, 1 / n), np.full(m, -1 / m)])
        a = np.stack([weights] + [weights[self.rng.permutation(n + m)] for _ in range(self.permutations)])
        statistics = np.einsum("ij,ij->i", a @ k, a)
        return float((np.sum(statistics[1:] >= statistics[0] - 1e-12) + 1) / (self.permutations + 1))


class PCA:
    """Principal components of a reference sample (NumPy SVD): a low-dimensional embedding for the drift tests."""

    def __init__(self, x: np.ndarray, components: int):
        x = x.reshape(len(x), -1).astype(np.float64)
        self.mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vt[:components]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1).astype(np.float64) - self.mean) @ self.components.T


def detection_rate(detector, pool: np.ndarray, window: int, windows: int, alpha: float = 0.05, seed: int = 0) -> float:
    """The fraction of `windows` random windows of `window` rows from `pool` that `detector` flags at level `alpha`:
    its power on a drifted pool."""
    rng = np.random.default_rng(seed)
    return float(np.mean([detector(pool[rng.choice(len(pool), window, replace=False)]) < alpha for _ in range(windows)]))


def false_alarm_rate(make_detector, rows: np.ndarray, window: int, windows: int, alpha: float = 0.05,
                     splits: int = 20, seed: int = 0) -> float:
    """The fraction of undrifted windows flagged: `rows` (one distribution) is cut into disjoint random halves
    `splits` times; `make_detector(half A)` tests windows drawn from half B. Re-drawing the reference matters: one
    fixed reference that happens to sit a little off its population would bias every window's test the same way."""
    rng = np.random.default_rng(seed)
    flagged = []
    for split in range(splits):
        order = rng.permutation(len(rows))
        detector, other = make_detector(rows[order[: len(rows) // 2]]), rows[order[len(rows) // 2 :]]
        flagged.append(detection_rate(detector, other, window, -(-windows // splits), alpha, seed=seed + split))
    return float(np.mean(flagged))


# --------------------------------------------------------------------------- drift monitoring inside the server

DRIFT_REFERENCE = "drift_reference.npy"


def softmax(logits: np.ndarray) -> np.ndarray:
    """export.softmax in float64: the probabilities a drift test compares, live and reference alike."""
    return export.softmax(np.asarray(logits, np.float64))


def add_drift_reference(directory: Path, logits: np.ndarray) -> Path:
    """Ship a drift reference with an export: the softmax of the model's outputs on reference data, saved beside the
    model and listed (with its checksum) in the version's manifest, so each version carries the reference that
    describes it and a tampered reference is refused like a tampered model."""
    from helpers.integrity import verify_manifest, write_manifest

    fields = {k: v for k, v in verify_manifest(directory).items() if k != "files"}
    np.save(Path(directory) / DRIFT_REFERENCE, softmax(logits), allow_pickle=False)  # float64, as live outputs are compared
    fields["drift_reference"] = {"file": DRIFT_REFERENCE, "rows": len(logits), "of": "softmax of the model's outputs"}
    write_manifest(directory, **fields)
    return Path(directory)


def drift_score(p_value: float) -> float:
    """-log10 of a p-value: 2 means "a window this unusual comes once in 100 undrifted windows"; capped at 16."""
    return float(-np.log10(max(p_value, 1e-16))) + 0.0  # + 0.0: no "-0.0" for p = 1


class DriftMonitor:
    """What the server runs per model version: the softmax of live outputs is collected into windows of `window`
    rows; each full window is tested against the version's reference (KS, Bonferroni over the classes) and counts as
    flagged when its p-value is below `alpha`. `flagged_in_a_row` is what the drift alert watches: counting windows,
    not seconds, keeps its meaning whatever the traffic rate."""

    def __init__(self, reference_probabilities: np.ndarray, window: int, alpha: float = 0.01):
        self.detector, self.window, self.alpha, self.rows = KSDetector(reference_probabilities), window, alpha, []
        self.flagged_in_a_row = 0

    def observe(self, logits: np.ndarray) -> list[tuple[float, float]]:
        """Add a batch of outputs; returns (p-value, mean top-class probability) for each window it completed."""
        self.rows.extend(softmax(logits))
        finished = []
        while len(self.rows) >= self.window:
            rows, self.rows = np.array(self.rows[: self.window]), self.rows[self.window :]
            p_value = self.detector(rows)
            self.flagged_in_a_row = self.flagged_in_a_row + 1 if p_value < self.alpha else 0
            finished.append((p_value, float(rows.max(axis=1).mean())))
        return finished


# --------------------------------------------------------------------------- what the detectors look at


def torch_views(model, images: np.ndarray, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """A PyTorch nn.Sequential classifier's view of uint8 images: its logits, softmax probabilities, predicted classes,
    and the penultimate layer's activations (the embedding the final layer classifies)."""
    import torch

    from helpers.training import images_for

    x = torch.from_numpy(images_for("torch", images))
    model.eval()
    with torch.no_grad():
        embedding = torch.cat([model[:-1](x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        logits = model[-1](embedding).numpy()
    probabilities = softmax(logits)
    return {"logits": logits, "probabilities": probabilities, "classes": probabilities.argmax(1), "embedding": embedding.numpy()}


# --------------------------------------------------------------------------- accuracy before the labels arrive


def atc_threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Average Thresholded Confidence (Garg et al., ICLR 2022): the confidence t above which the fraction of labelled
    reference predictions equals their accuracy. On new data, the fraction above t estimates the accuracy."""
    return float(np.quantile(confidence, 1.0 - np.mean(correct)))


def estimated_accuracy(confidence: np.ndarray, threshold: float | None = None) -> float:
    """Accuracy estimated without labels: the mean top-class probability (right if the model is calibrated), or with
    an ATC `threshold`, the fraction of predictions more confident than it."""
    return float(np.mean(confidence)) if threshold is None else float(np.mean(confidence > threshold))


# --------------------------------------------------------------------------- the server's own numbers


def read_metrics(url: str) -> dict[tuple, float]:
    """The server's /metrics, parsed with prometheus_client: {(sample name, sorted labels): value}. The fallback when
    there is no Prometheus: the current values only, no history, no PromQL."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def metric(values: dict[tuple, float], name: str, **labels) -> float | None:
    """One value from read_metrics' result, by name and labels (None if absent)."""
    return values.get((name, tuple(sorted(labels.items()))))


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

        from helpers.serving.client import infer_request, parse_infer_response
        from helpers.serving.protocols import BINARY_HEADER

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


def severity_for_drop(accuracy_at, target_drop: float, low: float, high: float, iterations: int = 12) -> float:
    """The severity at which `accuracy_at(severity)` falls `target_drop` below `accuracy_at(0)`, by bisection between
    `low` and `high` (accuracy must fall as severity grows). Calibrates each shift to the harm it does, e.g. the
    "1-point" severity that costs the model one percentage point."""
    clean = accuracy_at(0.0)
    if clean - accuracy_at(high) < target_drop:
        raise ValueError(f"even severity {high} costs less than {target_drop:.3f}; raise `high`")
    for _ in range(iterations):
        middle = (low + high) / 2
        if clean - accuracy_at(middle) < target_drop:
            low = middle
        else:
            high = middle
    return (low + high) / 2
