"""Check gradients numerically: central finite differences and the relative error used to compare them."""

from __future__ import annotations

from typing import Callable

import numpy as np

from helpers.progress import progress


def relative_error(a: np.ndarray, b: np.ndarray, floor: float = 1e-12) -> float:
    """max |a-b| / max(|a|+|b|): scale-free, so one threshold works for big and small gradients."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), floor))


def numerical_gradient(
    f: Callable[[], float], x: np.ndarray, eps: float = 1e-6, indices=None, show_progress: bool = False
) -> np.ndarray:
    """Central differences (f(x+h) - f(x-h)) / 2h of the scalar `f()` with respect to array `x`, in place.

    `f` reads `x` (closed over), so each coordinate is nudged, evaluated and restored.
    `indices` (flat) limits the check to some coordinates; the others are left at 0.
    """
    if not (x.flags.c_contiguous and np.issubdtype(x.dtype, np.floating)):
        raise ValueError("x must be a C-contiguous float array: nudging a copy would leave f unchanged and every gradient 0")
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    todo = range(flat_x.size) if indices is None else indices
    for i in progress(todo, disable=not show_progress, desc="finite differences", leave=False):
        original = flat_x[i]
        flat_x[i] = original + eps
        f_plus = f()
        flat_x[i] = original - eps
        f_minus = f()
        flat_x[i] = original
        flat_g[i] = (f_plus - f_minus) / (2 * eps)
    return grad
