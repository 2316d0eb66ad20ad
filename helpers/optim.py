"""Gradient-descent optimisers in NumPy, written to match torch.optim's update rules exactly (chapter 01).

Each has `step(x, grad) -> new x`; `run` follows one from a start point and returns its path.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


class SGD:
    def __init__(self, lr: float):
        self.lr = lr

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return x - self.lr * grad


class Momentum:
    """Heavy-ball momentum as torch.optim.SGD(momentum=...) does it: v = mu*v + g; x -= lr*v."""

    def __init__(self, lr: float, momentum: float = 0.9):
        self.lr, self.momentum, self.velocity = lr, momentum, None

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.velocity = grad.copy() if self.velocity is None else self.momentum * self.velocity + grad
        return x - self.lr * self.velocity


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction, as torch.optim.Adam computes it."""

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = self.v = None
        self.t = 0

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if self.m is None:
            self.m, self.v = np.zeros_like(x), np.zeros_like(x)
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad**2
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        return x - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def run(optimizer, grad_fn: Callable[[np.ndarray], np.ndarray], x0, steps: int) -> np.ndarray:
    """The path [x0, x1, ..., x_steps] of `optimizer` on a function whose gradient is `grad_fn`."""
    path = [np.asarray(x0, dtype=np.float64)]
    for _ in range(steps):
        path.append(optimizer.step(path[-1], grad_fn(path[-1])))
    return np.array(path)


class Quadratic:
    """f(x) = 1/2 x^T A x: the simplest loss surface with a condition number, and exact answers.

    Gradient descent on it converges iff lr < 2 / (largest eigenvalue of A).
    """

    def __init__(self, eigenvalues=(1.0, 20.0), angle_deg: float = 30.0):
        c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
        rotation = np.array([[c, -s], [s, c]])
        self.A = rotation @ np.diag(eigenvalues) @ rotation.T
        self.eigenvalues = np.array(eigenvalues, dtype=np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Loss at x; x may be (2,) or a grid (2, ...)."""
        x = np.asarray(x, dtype=np.float64)
        return 0.5 * np.einsum("i...,ij,j...->...", x, self.A, x)

    def grad(self, x: np.ndarray) -> np.ndarray:
        return self.A @ x

    def divergence_threshold(self) -> float:
        return 2.0 / float(self.eigenvalues.max())


def loss_ratio(optimizer, problem, x0, steps: int = 500) -> float:
    """Final loss / initial loss after `steps` steps: below 1 it made progress; inf if it overflowed."""
    with np.errstate(over="ignore", invalid="ignore"):
        final = float(problem(run(optimizer, problem.grad, x0, steps)[-1]))
    return final / float(problem(np.asarray(x0, dtype=np.float64))) if np.isfinite(final) else float("inf")


def diverges(optimizer, problem, x0, steps: int = 500) -> bool:
    """True if `optimizer` ends further up `problem` than it started (or overflows)."""
    return not loss_ratio(optimizer, problem, x0, steps) < 1
