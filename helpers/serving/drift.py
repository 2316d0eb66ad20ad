"""The drift monitor the inference server runs (chapter 06 serves it, chapter 07 studies it): each exported model
version ships a drift reference (`add_drift_reference`: the softmax of its outputs on reference data, listed in the
version's manifest), and `DriftMonitor` collects the softmax of live outputs into windows, tests each full window
against that reference with a Kolmogorov-Smirnov test (`KSDetector`, Bonferroni over the classes) and counts the
windows flagged in a row, which the server exports as a metric (`drift_score`: -log10 of the p-value) for the drift
alert. Kept small and low-level on purpose: the server imports it, and it imports nothing from the course's
monitoring chapter (helpers.monitoring builds on it, not the other way round).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.integrity import verify_manifest, write_manifest
from helpers.losses import softmax as stable_softmax

DRIFT_REFERENCE = "drift_reference.npy"


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


def softmax(logits: np.ndarray) -> np.ndarray:
    """The course's one softmax (helpers.losses), in float64: the probabilities a drift test compares, live and
    reference alike."""
    return stable_softmax(np.asarray(logits, np.float64))


def add_drift_reference(directory: Path, logits: np.ndarray) -> Path:
    """Ship a drift reference with an export: the softmax of the model's outputs on reference data, saved beside the
    model and listed (with its checksum) in the version's manifest, so each version carries the reference that
    describes it and a tampered reference is refused like a tampered model."""
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
