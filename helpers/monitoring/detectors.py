"""Chapter 07's data-drift detectors, and how to measure them as detectors should be measured. A detector is built
from a reference sample (what the model saw when it was known to work) and called on a window of production rows; it
returns a p-value: how likely a window at least this different would be if nothing had changed, so flagging windows
with p < alpha gives false alarms on about alpha of undrifted windows, by construction. `KSDetector` (per column,
Bonferroni; the same class the server runs, from helpers.serving.drift) and `ks_test`, `PSIDetector` and `psi` (the
predicted-class distribution), `MMDDetector` (multivariate, kernel two-sample test) and `PCA` (a small embedding to
test). `detection_rate` and `false_alarm_rate` measure power and level; `flagged_in_a_row` evaluates the drift
alert's rule in Python, for machines without Prometheus.
"""

from __future__ import annotations

import numpy as np

from helpers.serving.drift import KSDetector


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


# --------------------------------------------------------------------------- measuring a detector


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


def flagged_in_a_row(scores, threshold: float = 2.0, windows: int = 2) -> int | None:
    """The index of the first window ending a run of `windows` drift scores over `threshold` (2: p < 0.01): the drift
    alert's rule (monitoring/alerts.yml) evaluated in Python, for machines without Prometheus."""
    run = 0
    for k, score in enumerate(scores):
        run = run + 1 if score is not None and score > threshold else 0
        if run == windows:
            return k
    return None
