"""A one-hidden-layer network in NumPy with backpropagation written out by hand (chapter 01).

    z1 = X W1 + b1      a1 = tanh(z1)      z2 = a1 W2 + b2      L = mean cross-entropy(softmax(z2), y)

tanh rather than ReLU: it is smooth everywhere, so finite differences have no kink to trip on.
"""

from __future__ import annotations

import numpy as np

from helpers.losses import cross_entropy_grad, cross_entropy_with_logits
from helpers.optim import Adam
from helpers.progress import progress


def init_params(n_in: int, n_hidden: int, n_out: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_hidden)),
        "b1": rng.normal(0, 0.1, n_hidden),
        "W2": rng.normal(0, 1 / np.sqrt(n_hidden), (n_hidden, n_out)),
        "b2": rng.normal(0, 0.1, n_out),
    }


def forward(params: dict, X: np.ndarray) -> tuple[np.ndarray, dict]:
    """Logits, plus what the backward pass needs."""
    z1 = X @ params["W1"] + params["b1"]
    a1 = np.tanh(z1)
    z2 = a1 @ params["W2"] + params["b2"]
    return z2, {"X": X, "a1": a1}


def loss(params: dict, X: np.ndarray, y: np.ndarray) -> float:
    return cross_entropy_with_logits(forward(params, X)[0], y)


def loss_and_grads(params: dict, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """The loss and dL/d(every parameter), by the chain rule, layer by layer from the output back."""
    z2, cache = forward(params, X)
    dz2 = cross_entropy_grad(z2, y)  # (softmax - onehot) / N
    dz1 = (dz2 @ params["W2"].T) * (1 - cache["a1"] ** 2)  # tanh'(z) = 1 - tanh(z)^2
    grads = {
        "W2": cache["a1"].T @ dz2,
        "b2": dz2.sum(axis=0),
        "W1": cache["X"].T @ dz1,
        "b1": dz1.sum(axis=0),
    }
    return cross_entropy_with_logits(z2, y), grads


def predict(params: dict, X: np.ndarray) -> np.ndarray:
    return forward(params, X)[0].argmax(axis=1)


def train(params: dict, X: np.ndarray, y: np.ndarray, steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0):
    """Mini-batch Adam on the hand-derived gradients; updates `params` in place, returns the loss per step."""
    rng = np.random.default_rng(seed)
    optimizers = {name: Adam(lr) for name in params}  # Adam keeps state per parameter array
    history = []
    for _ in progress(range(steps), desc="training the NumPy MLP"):
        batch = rng.integers(0, len(X), batch_size)
        loss_value, grads = loss_and_grads(params, X[batch], y[batch])
        for name in params:
            params[name] = optimizers[name].step(params[name], grads[name])
        history.append(loss_value)
    return np.array(history)
