"""Loss functions and softmax in plain NumPy: the reference the frameworks are checked against (chapter 01).

Conventions: `z` are logits (any real numbers), `p` probabilities, `y` integer class labels,
rows are examples. Every loss returns the mean over examples.
"""

from __future__ import annotations

import numpy as np


def one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[np.asarray(y)]


def logsumexp(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(sum(exp(z))) without overflow: shift by the max first, since log Σ e^z = m + log Σ e^(z-m)."""
    m = np.max(z, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(z - m), axis=axis))


def softmax_naive(z: np.ndarray) -> np.ndarray:
    """The textbook formula. Overflows for large logits (e^1000 = inf): kept to show why not to use it."""
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def softmax(z: np.ndarray) -> np.ndarray:
    """Numerically stable softmax: subtracting the row max changes nothing mathematically."""
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    return z - logsumexp(z, axis=-1)[..., None]


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean((pred - target) ** 2))


def binary_cross_entropy(p: np.ndarray, y: np.ndarray, eps: float = 1e-12) -> float:
    """BCE on probabilities; clipped because log(0) = -inf."""
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def binary_cross_entropy_with_logits(z: np.ndarray, y: np.ndarray) -> float:
    """BCE on logits, stable for any z: max(z,0) - z*y + log(1 + e^-|z|)."""
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def cross_entropy(p: np.ndarray, y: np.ndarray, eps: float = 1e-12) -> float:
    """Categorical cross-entropy on probabilities: -mean(log p[y])."""
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))


def cross_entropy_with_logits(z: np.ndarray, y: np.ndarray) -> float:
    """Categorical cross-entropy on logits via log-softmax: exact and stable, no clipping needed."""
    return float(-np.mean(log_softmax(z)[np.arange(len(y)), y]))


def cross_entropy_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(mean cross-entropy)/dz = (softmax(z) - onehot(y)) / N."""
    return (softmax(z) - one_hot(y, z.shape[-1])) / len(y)
