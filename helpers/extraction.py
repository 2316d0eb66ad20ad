"""Model extraction ("stealing") through the serving API (chapter 12).

The attacker cannot read the served model's weights, only ask it questions: send images to /v2/models/<name>/infer and
keep the answers. With enough answers they train a copy that agrees with the victim on most inputs — a model they
never paid to train, and a white-box stand-in for crafting adversarial inputs against the original. How many queries
that takes, and how much the answer format gives away, is what chapter 12 measures:

* `query_probabilities` asks the server, a batch at a time, and counts every image it sends (`QueryCount`): the
  attacker's cost, and what a per-client rate limit or quota would meter.
* `attacker_pool` is the attacker's own digits. Chapter 02 trains the victim on all 60,000 MNIST training images (and
  validates on the test set), so no unseen *training* digit exists. The pool is therefore built from the first half of
  the test set — 5,000 digits the victim never trained on — and, beyond 5,000, copies of them moved by random shifts
  (up to 2 pixels) and rotations (up to 15°): an attacker's augmentation, not new handwriting. The second half of the
  test set is kept for evaluating the copies (`evaluation_split`), so no evaluation digit is ever queried.
* `train_copy` trains the copy on the answers: `mode="probabilities"` against the victim's full probability vectors
  (soft labels, cross-entropy = KL divergence up to a constant), `mode="top1"` against its top class only (what a
  server answering with the class alone, or a one-hot vector, gives away). The attacker does not know the victim's
  architecture (better_cnn); the copy is the course's other CNN, `source_cnn` (one conv layer, no dropout).
* `extraction_curve` measures agreement with the victim and true accuracy against the number of queries, from answers
  queried once for the largest budget (so it runs without a server).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from helpers import models, training
from helpers.losses import softmax
from helpers.progress import is_text_mode, progress

COPY_ARCHITECTURE = "source_cnn"  # not the victim's better_cnn: the attacker does not know it
MODES = ("probabilities", "top1")
POOL_IMAGES = 5_000  # the test set's first half: the attacker's real digits; its second half evaluates the copies
MAX_SHIFT, MAX_ROTATION_DEG = 2, 15
# The copy's training length, scaled to the budget so a small budget is not under-trained: at least MIN_EPOCHS epochs
# and at least MIN_STEPS optimisation steps (100 queries: 400 epochs of one batch; 10,000 queries: 8 epochs, 632 steps).
# Measured against better_cnn: a floor of 200 steps gave the same agreement at 100 and 300 queries but 0.7 points less
# at 1,000; 800 steps overfit 100 queries (1.5 points less) and tripled the time. 400 is the middle.
MIN_EPOCHS, MIN_STEPS, BATCH_SIZE, PEAK_LR = 8, 400, 128, 3e-3


# --------------------------------------------------------------------------- asking the server


@dataclass
class QueryCount:
    """What the attacker has spent: images sent and HTTP requests made."""

    images: int = 0
    requests: int = 0


def to_probabilities(outputs: dict) -> np.ndarray:
    """The (N, 10) class probabilities in an infer answer's outputs. The course's ONNX export of the torch models
    answers `logits` (helpers.export), which are softmaxed here; rows that already are probabilities (a Keras export's
    `probabilities`, or a top-class-only server's one-hot vectors, whatever the output's name) are returned as they
    are: softmaxing a one-hot row would invent soft labels. Logits are never all >= 0 with every row summing to 1."""
    name = next((n for n in ("probabilities", "logits") if n in outputs), None) or next(iter(outputs))
    values = np.asarray(outputs[name], np.float32)
    already = values.min() >= 0 and np.allclose(values.sum(1), 1, atol=1e-3)
    return values if already else softmax(values.astype(np.float64)).astype(np.float32)


def query_probabilities(client, model_name: str, input_name: str, images: np.ndarray, batch_size: int = 100,
                        binary: bool = True, count: QueryCount | None = None) -> np.ndarray:
    """The served model's probabilities (N, 10) for NCHW float32 `images`, asked `batch_size` images per request
    through `client.infer` (a helpers.serving.client.ServingClient); each image and request is added to `count`."""
    images = np.ascontiguousarray(images, np.float32)
    answers = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        answers.append(to_probabilities(client.infer(model_name, batch, input_name, binary=binary)["outputs"]))
        if count is not None:
            count.images += len(batch)
            count.requests += 1
    return np.concatenate(answers) if answers else np.zeros((0, 10), np.float32)


def victim_probabilities(model, images: np.ndarray) -> np.ndarray:
    """The same answers in-process, from the torch model itself: for measuring without a server."""
    return softmax(training.torch_logits(model, np.ascontiguousarray(images, np.float32)).astype(np.float64)).astype(np.float32)


# --------------------------------------------------------------------------- the attacker's images


class Pool(NamedTuple):
    images: np.ndarray  # (size, 1, 28, 28) float32 in [0, 1]
    origin: np.ndarray  # (size,) index into mnist.x_test of the digit each image comes from
    transformed: np.ndarray  # (size,) bool: shifted and rotated (a copy), or the digit as it is


def shift_and_rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each NCHW image rotated by its own angle in ±MAX_ROTATION_DEG and shifted by up to MAX_SHIFT pixels (bilinear,
    zeros brought in at the borders)."""
    import torch
    import torch.nn.functional as F

    n = len(images)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, n))
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, (n, 2)) * 2 / 28  # affine_grid's coordinates span [-1, 1] over 28 pixels
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
    theta[:, :, 2] = shift
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros").clamp(0, 1).numpy()


def attacker_pool(mnist, size: int = 10_000, seed: int = 0) -> Pool:
    """`size` images the victim never trained on: the test set's first POOL_IMAGES digits in a random order, then (past
    that many) shifted and rotated copies of them. See the module docstring for why."""
    rng = np.random.default_rng(seed)
    originals = training.images_for("torch", mnist.x_test[:POOL_IMAGES])
    first = rng.permutation(POOL_IMAGES)[:size]
    origin, images = [first], [originals[first]]
    while sum(len(o) for o in origin) < size:
        extra = rng.permutation(POOL_IMAGES)[: size - sum(len(o) for o in origin)]
        origin.append(extra)
        images.append(shift_and_rotate(originals[extra], rng))
    transformed = np.concatenate([np.full(len(o), i > 0) for i, o in enumerate(origin)])
    return Pool(np.concatenate(images), np.concatenate(origin), transformed)


def evaluation_split(mnist) -> tuple[np.ndarray, np.ndarray]:
    """(images, true labels) of the test set's second half, never in the attacker's pool."""
    return training.images_for("torch", mnist.x_test[POOL_IMAGES:]), mnist.y_test[POOL_IMAGES:].astype(np.int64)


# --------------------------------------------------------------------------- the copy


def copy_epochs(n: int, batch_size: int = BATCH_SIZE) -> int:
    """Epochs for `n` training images: at least MIN_EPOCHS, and at least MIN_STEPS steps in all."""
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS / math.ceil(n / batch_size)))


def training_targets(targets: np.ndarray, mode: str):
    """Soft (N, 10) probabilities for mode="probabilities"; class indices for "top1" (from labels, one-hot rows or
    probabilities alike)."""
    import torch

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    targets = np.asarray(targets)
    if mode == "top1":
        return torch.from_numpy((targets.argmax(1) if targets.ndim == 2 else targets).astype(np.int64))
    if targets.ndim != 2:
        raise ValueError("mode='probabilities' needs (N, 10) probability rows; class labels carry only the top class")
    return torch.from_numpy(targets.astype(np.float32))


def train_copy(images: np.ndarray, targets: np.ndarray, mode: str, epochs: int | None = None, seed: int = 0,
               batch_size: int = BATCH_SIZE):
    """A COPY_ARCHITECTURE model trained on the victim's answers `targets` for `images` (see `training_targets`), by
    Adam with chapter 02's warm-up + cosine schedule; epochs=None scales them to the budget (`copy_epochs`)."""
    import torch
    import torch.nn.functional as F

    y = training_targets(targets, mode)
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    epochs = copy_epochs(len(x), batch_size) if epochs is None else epochs
    recipe = training.Recipe(epochs=epochs, batch_size=batch_size, peak_lr=PEAK_LR, seed=seed)
    torch.manual_seed(seed)  # the copy's initial weights
    generator = torch.Generator().manual_seed(seed)
    model = models.torch_model(COPY_ARCHITECTURE)
    optimizer = torch.optim.Adam(model.parameters(), lr=PEAK_LR)
    total_steps, step = epochs * recipe.steps_per_epoch(len(x)), 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = training.learning_rate(step, total_steps, recipe)
            loss = F.cross_entropy(model(x[idx]), y[idx])  # soft targets: cross-entropy against the probabilities
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    return model.eval()


def predicted_classes(model, images: np.ndarray) -> np.ndarray:
    return training.torch_logits(model, np.ascontiguousarray(images, np.float32)).argmax(1)


def extraction_curve(pool_images: np.ndarray, victim_probs: np.ndarray, budgets=(100, 300, 1000, 3000, 10000),
                     modes=MODES, x_eval: np.ndarray | None = None, victim_eval_labels: np.ndarray | None = None,
                     y_eval_true: np.ndarray | None = None, seed: int = 0, progress_bar: bool = True) -> pd.DataFrame:
    """One row per (budget, mode): budget, mode, agreement (the copy's top class == the victim's on x_eval), accuracy
    (against the true labels), seconds (training the copy). The copy for budget b trains on the first b pool images
    and the victim's answers for them, `victim_probs[:b]`: the notebook queries the server once, for the largest."""
    if x_eval is None or victim_eval_labels is None or y_eval_true is None:
        raise ValueError("x_eval, victim_eval_labels and y_eval_true are needed to score the copies")
    if max(budgets) > len(pool_images) or len(victim_probs) < max(budgets):
        raise ValueError(f"the largest budget ({max(budgets)}) is more than the {min(len(pool_images), len(victim_probs))} answers given")
    runs = [(budget, mode) for budget in budgets for mode in modes]
    rows = []
    for budget, mode in progress(runs, desc="copies", leave=False, disable=is_text_mode() or not progress_bar):
        started = time.perf_counter()
        copy = train_copy(pool_images[:budget], victim_probs[:budget], mode, seed=seed)
        seconds = time.perf_counter() - started
        predicted = predicted_classes(copy, x_eval)
        rows.append({"budget": budget, "mode": mode, "agreement": float(np.mean(predicted == victim_eval_labels)),
                     "accuracy": float(np.mean(predicted == y_eval_true)), "seconds": seconds})
    return pd.DataFrame(rows)
