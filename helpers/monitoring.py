"""Watching a deployed model (chapter 07): a real Prometheus, and data-drift detectors measured as detectors should be.

Prometheus: `running_prometheus(targets)` writes a scrape configuration (with the course's alerting rules,
`monitoring/alerts.yml`), starts the `prometheus` binary on a free 127.0.0.1 port with its data under
`artifacts/prometheus/`, and stops it when the block ends; `query`/`query_range` speak its HTTP API.

Drift: `SHIFTS` turn clean test images into drifted ones at a chosen severity; the detectors compare a window of
production data with a reference sample and return a p-value (small = "these do not come from the same distribution").
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from helpers import paths

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
        raise FileNotFoundError("prometheus is not installed (Debian/Ubuntu: apt-get install prometheus; macOS: brew install prometheus)")
    port = free_port()
    home = paths.artifacts() / "prometheus" / str(port)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = write_config(home / "prometheus.yml", targets, scrape_interval_s, rules)
    command = [shutil.which("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"]
    with running(command, "/-/ready", "prometheus", port) as (url, _, _):
        yield url


def query(url: str, promql: str) -> list[dict]:
    """An instant query: [{"metric": labels, "value": float}, ...]."""
    import httpx

    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    if answer["status"] != "success":
        raise ValueError(f"PromQL error for {promql!r}: {answer.get('error')}")
    return [{"metric": r["metric"], "value": float(r["value"][1])} for r in answer["data"]["result"]]


def query_range(url: str, promql: str, start: float, end: float, step_s: float = 1.0):
    """A range query as a DataFrame: one column per series (named by its labels), indexed by unix time."""
    import httpx
    import pandas as pd

    answer = httpx.get(f"{url}/api/v1/query_range", params={"query": promql, "start": start, "end": end, "step": step_s},
                       timeout=30).json()
    if answer["status"] != "success":
        raise ValueError(f"PromQL error for {promql!r}: {answer.get('error')}")
    columns = {}
    for series in answer["data"]["result"]:
        name = ",".join(f"{k}={v}" for k, v in sorted(series["metric"].items())) or promql
        columns[name] = pd.Series({float(t): float(v) for t, v in series["values"]})
    return pd.DataFrame(columns)


def wait_for_first_scrape(url: str, timeout_s: float = 30.0) -> None:
    """Poll until Prometheus has scraped the server at least once (`up == 1`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(r["value"] == 1 for r in query(url, 'up{job="inference-server"}')):
            return
        time.sleep(0.2)
    raise TimeoutError(f"Prometheus at {url} did not scrape the server within {timeout_s} s")


def alerts(url: str) -> list[dict]:
    """Active alerts with their state ("pending" or "firing")."""
    import httpx

    return httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


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


def ks_test(reference: np.ndarray, window: np.ndarray) -> float:
    """Kolmogorov-Smirnov on each column (class probability, embedding coordinate), Bonferroni-corrected: the p-value
    that no column changed distribution. Bonferroni multiplies the smallest p-value by the number of tests, so that
    checking k columns does not give k chances of a false alarm."""
    from scipy import stats

    reference, window = np.atleast_2d(reference.T).T, np.atleast_2d(window.T).T
    p = min(stats.ks_2samp(reference[:, j], window[:, j]).pvalue for j in range(reference.shape[1]))
    return float(min(1.0, p * reference.shape[1]))


def psi(reference_classes: np.ndarray, window_classes: np.ndarray, n_classes: int = 10, floor: float = 1e-4) -> float:
    """Population Stability Index of the predicted-class distribution: sum (q - p) ln(q / p). Rules of thumb read
    < 0.1 as stable and > 0.25 as a major shift; here its threshold is calibrated on undrifted windows instead."""
    p = np.maximum(np.bincount(reference_classes, minlength=n_classes) / len(reference_classes), floor)
    q = np.maximum(np.bincount(window_classes, minlength=n_classes) / len(window_classes), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel (biased estimate): how far apart two samples' mean
    embeddings are in the kernel's feature space; 0 for identical distributions."""
    z = np.concatenate([x, y])
    sq = np.sum(z**2, axis=1)
    k = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0) / (2 * bandwidth**2))
    n = len(x)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


def median_bandwidth(x: np.ndarray) -> float:
    """The median pairwise distance, the usual default kernel width."""
    d = np.sqrt(np.maximum(np.sum(x**2, 1)[:, None] + np.sum(x**2, 1)[None, :] - 2 * x @ x.T, 0))
    return float(np.median(d[np.triu_indices(len(x), 1)])) or 1.0


def mmd_test(reference: np.ndarray, window: np.ndarray, permutations: int = 100, seed: int | None = None,
             bandwidth: float | None = None) -> float:
    """Permutation p-value of the MMD: how often shuffling the pooled samples gives a discrepancy at least as large."""
    rng = np.random.default_rng(seed)
    bandwidth = bandwidth or median_bandwidth(reference)
    observed = mmd2(reference, window, bandwidth)
    pooled, n = np.concatenate([reference, window]), len(reference)
    count = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        count += mmd2(pooled[order[:n]], pooled[order[n:]], bandwidth) >= observed
    return float((count + 1) / (permutations + 1))


class PCA:
    """Principal components of a reference sample (NumPy SVD): a low-dimensional embedding for the drift tests."""

    def __init__(self, x: np.ndarray, components: int):
        x = x.reshape(len(x), -1).astype(np.float64)
        self.mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vt[:components]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1).astype(np.float64) - self.mean) @ self.components.T


def detection_rate(test, reference, pool: np.ndarray, window: int, windows: int, alpha: float = 0.05, seed: int = 0) -> float:
    """The fraction of `windows` random windows of `window` rows from `pool` that `test(reference, window_rows)`
    flags at level `alpha`: the detector's power on drifted data, or its false-alarm rate on undrifted data."""
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(windows):
        rows = pool[rng.choice(len(pool), size=window, replace=False)]
        flagged += test(reference, rows) < alpha
    return flagged / windows


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
