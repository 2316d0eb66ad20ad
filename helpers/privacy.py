"""What a served model gives away about the digits it was trained on, and training that bounds it (chapter 13).

*Membership inference* asks one question of a model: was this example in its training set? The attacker sends the
example to the API and turns the answer into a score, higher meaning "more likely a member". A model that has
memorised its training set answers its members with more confidence than other digits, and the score shows it:

* `loss_scores`: minus the example's cross-entropy (Yeom et al. 2018): members have low loss.
* `confidence_logit`: LiRA's statistic φ = log(p_y / (1 − p_y)), the true class's logit-scaled confidence. Unlike p_y
  it does not saturate at 1: 0.9999 and 0.999999 are 9.2 and 13.8 apart, which is what the attack needs.
* `correctness_scores`: 1 if the top class is right, else 0 — all that a top-class-only API gives away (the label-only
  "gap" attack: a member is guessed when the answer is right).

`attack_roc` measures an attack as a classifier of members vs non-members: its ROC curve, AUC, and — the figure that
matters for privacy (Carlini et al. 2022) — the true-positive rate at 1 % false-positive rate: how many members the
attacker identifies *confidently*. An AUC of 0.6 can come from many examples each a little more likely a member, which
exposes no one; a high TPR at 1 % FPR means some individuals are exposed.

The strongest attack here is *LiRA*, the likelihood-ratio attack (Carlini et al. 2022, "Membership Inference Attacks
From First Principles"). Some digits are hard (low φ even when trained on), others easy (high φ even when not), so one
threshold for all treats a hard member like a non-member. LiRA trains *shadow* models, on random halves of a pool of
data the attacker holds (`shadow_assignment`, `train_shadows`), and learns per example how φ is distributed when the
example was in the training set and when it was not; the target model's φ is then scored by the likelihood ratio of the
two Gaussians (`lira_scores`). With few shadows (8 here) the paper recommends one global variance per side, estimated
from all examples, and a mean per example: that is what `lira_scores` does.

The models attacked are trained on little data until they memorise it (`MEMORISE`, `train_small`): the setting in
which a model leaks most, and one that trains in seconds.

The defence with a guarantee is *differentially private* training: DP-SGD (Abadi et al. 2016) clips each example's
gradient to norm C and adds Gaussian noise of standard deviation σ·C to the sum of a batch, so that no single example
can move the model much; an accountant turns σ, the sampling rate and the number of steps into (ε, δ): for any example,
the probability of any outcome changes by a factor of at most e^ε (plus δ) whether that example was trained on or not.
It also bounds every membership attack: at FPR α, TPR ≤ e^ε·α + δ. `train_dp` does it with Opacus, plainly enough for a
notebook to show the same setup and get the same weights: Poisson-sampled batches, *ghost clipping* (the per-example
gradient norms computed without materialising per-example gradients: ~1.4x a plain epoch here, against ~2.3x for
Opacus' default per-sample hooks), and the PRV accountant (tighter than RDP: more accuracy for the same ε).

Inputs are uint8 (N, 28, 28) digits or float32 NCHW images in [0, 1]; models are the course's `source_cnn` (logits).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from helpers import models, training
from helpers.progress import is_text_mode, progress

ARCHITECTURE = "source_cnn"


# --------------------------------------------------------------------------- attack scores (higher = "member")


def check_logits(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    """(logits as float64 (N, C), labels as int (N,)), or ValueError if their shapes do not match."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (len(logits),):
        raise ValueError(f"logits must be (N, classes) and labels (N,); got {logits.shape} and {labels.shape}")
    return logits, labels.astype(np.int64)


def logsumexp(z: np.ndarray) -> np.ndarray:
    """log Σ exp(z) over the last axis without overflow: the largest term is taken out first. -inf entries count 0."""
    top = z.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True)))[..., 0]


def loss_scores(logits, labels) -> np.ndarray:
    """Minus each example's cross-entropy, −(logsumexp(z) − z_y), in float64: the loss attack's score."""
    z, y = check_logits(logits, labels)
    return z[np.arange(len(z)), y] - logsumexp(z)


def confidence_logit(logits, labels) -> np.ndarray:
    """LiRA's φ = log(p_y / (1 − p_y)) = z_y − logsumexp_{j≠y} z_j, computed from the logits directly.

    From probabilities, 1 − p_y would round to 0 as soon as p_y > 1 − 1e-16 (a logit gap of ~37): a memorised example
    would get φ = inf. From logits it stays finite and exact at any scale."""
    z, y = check_logits(logits, labels)
    rows = np.arange(len(z))
    others = z.copy()
    others[rows, y] = -np.inf  # leaves the true class out of the sum
    return z[rows, y] - logsumexp(others)


def correctness_scores(logits, labels) -> np.ndarray:
    """1.0 where the top class is the label, else 0.0: what a top-class-only API lets an attacker score."""
    z, y = check_logits(logits, labels)
    return (z.argmax(axis=1) == y).astype(np.float64)


# --------------------------------------------------------------------------- measuring an attack


@dataclass(frozen=True, eq=False)  # eq=False: == between numpy arrays has no single truth value
class AttackResult:
    auc: float
    tpr_at_1pct_fpr: float
    fpr: np.ndarray
    tpr: np.ndarray
    n_members: int
    n_nonmembers: int


def tpr_at_fpr(fpr_curve: np.ndarray, tpr_curve: np.ndarray, target: float = 0.01) -> float:
    """The largest TPR among the ROC curve's points with FPR ≤ target (the LiRA paper's convention).

    Only thresholds the attacker can actually set count, with no interpolation between them: a score with few distinct
    values (e.g. `correctness_scores`) gets the honest, low figure of its last point under the target."""
    fpr_curve, tpr_curve = np.asarray(fpr_curve), np.asarray(tpr_curve)
    allowed = fpr_curve <= target
    return float(tpr_curve[allowed].max()) if allowed.any() else 0.0


def attack_roc(scores, is_member) -> AttackResult:
    """The ROC of `scores` as a member-vs-non-member classifier: AUC, TPR at 1 % FPR, the curve and the two counts."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores, is_member = np.asarray(scores, np.float64), np.asarray(is_member, bool)
    if scores.shape != is_member.shape or scores.ndim != 1:
        raise ValueError(f"scores and is_member must be 1-D and the same length; got {scores.shape} and {is_member.shape}")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(scores)} scores are NaN or infinite: an attack must score every example")
    n_members = int(is_member.sum())
    if n_members in (0, len(is_member)):
        raise ValueError(f"is_member must contain both members and non-members; got {n_members} members of {len(is_member)}")
    # drop_intermediate=False: every threshold kept, so tpr_at_fpr sees every point the attacker could choose
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    return AttackResult(auc=float(roc_auc_score(is_member, scores)), tpr_at_1pct_fpr=tpr_at_fpr(fpr, tpr, 0.01), fpr=fpr,
                        tpr=tpr, n_members=n_members, n_nonmembers=len(is_member) - n_members)


# --------------------------------------------------------------------------- who trains on what


def membership_split(n_pool: int, n_members: int, seed: int) -> np.ndarray:
    """A boolean mask over the pool with exactly `n_members` True, at random positions: the target's training set."""
    if not 0 < n_members < n_pool:
        raise ValueError(f"n_members must be between 1 and n_pool - 1 = {n_pool - 1} (members and non-members both); "
                         f"got {n_members}")
    mask = np.zeros(n_pool, bool)
    mask[np.random.default_rng(seed).permutation(n_pool)[:n_members]] = True
    return mask


def shadow_assignment(n_examples: int, n_shadows: int, seed: int) -> np.ndarray:
    """(n_shadows, n_examples) bool: shadow k trains on example i where True.

    Each example is IN for exactly half of the shadows (as LiRA's code assigns them), so every example has both IN and
    OUT shadows to learn its two distributions from; each shadow then trains on about half of the pool."""
    if n_shadows < 2 or n_shadows % 2:
        raise ValueError(f"n_shadows must be even and at least 2 (half IN, half OUT for every example); got {n_shadows}")
    column = np.arange(n_shadows) < n_shadows // 2  # half True, half False
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(column, (n_examples, 1)), axis=1).T  # each example's column shuffled on its own


# --------------------------------------------------------------------------- LiRA


def pooled_std(phi: np.ndarray, cells: np.ndarray, means: np.ndarray) -> float:
    """One standard deviation for all examples: φ's spread around each example's own mean, pooled over `cells`.

    Divided by (cells − examples), as a pooled within-group variance is: an example with a single cell has residual 0
    by construction and gives no information about the spread, which dividing by the cell count alone would hide."""
    residuals = np.where(cells, phi - means, 0.0)
    dof = int(cells.sum()) - int(cells.any(axis=0).sum())
    if dof <= 0:
        raise ValueError("a variance needs at least two shadow models on the same side (IN or OUT) of some example; "
                         f"got {int(cells.sum())} cells over {cells.shape[1]} examples: use 4 or more shadows")
    return math.sqrt(float((residuals**2).sum()) / dof)


def gaussian_log_density(x: np.ndarray, mean: np.ndarray, std: float) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def lira_scores(target_phi, shadow_phi, shadow_in) -> np.ndarray:
    """Online LiRA with a fixed (global) variance: log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out), per example.

    target_phi (N,): the target model's φ on each example; shadow_phi (K, N): each shadow's φ; shadow_in (K, N): which
    shadows trained on which example. μ_in, μ_out are per-example means over the IN and OUT shadows; σ_in, σ_out one
    each for all examples (`pooled_std`). An example needs both IN and OUT shadows (`shadow_assignment` ensures it)."""
    target_phi, shadow_phi = np.asarray(target_phi, np.float64), np.asarray(shadow_phi, np.float64)
    shadow_in = np.asarray(shadow_in, bool)
    if shadow_phi.ndim != 2 or shadow_in.shape != shadow_phi.shape or target_phi.shape != shadow_phi.shape[1:]:
        raise ValueError(f"need target_phi (N,), shadow_phi and shadow_in (K, N); got {target_phi.shape}, "
                         f"{shadow_phi.shape} and {shadow_in.shape}")
    n_in, n_out = shadow_in.sum(axis=0), (~shadow_in).sum(axis=0)
    if (n_in == 0).any() or (n_out == 0).any():
        raise ValueError(f"{int((n_in == 0).sum())} examples have no IN shadow and {int((n_out == 0).sum())} no OUT "
                         "shadow: LiRA needs both for every example (split the shadows with shadow_assignment)")
    mu_in = np.where(shadow_in, shadow_phi, 0.0).sum(axis=0) / n_in
    mu_out = np.where(~shadow_in, shadow_phi, 0.0).sum(axis=0) / n_out
    sigma_in, sigma_out = pooled_std(shadow_phi, shadow_in, mu_in), pooled_std(shadow_phi, ~shadow_in, mu_out)
    return gaussian_log_density(target_phi, mu_in, sigma_in) - gaussian_log_density(target_phi, mu_out, sigma_out)


# --------------------------------------------------------------------------- models that memorise


@dataclass(frozen=True)
class SmallRecipe:
    """Adam at a constant rate on a small training set, no augmentation: trained to memorise, not to generalise."""

    epochs: int
    batch_size: int
    lr: float


MEMORISE = SmallRecipe(epochs=30, batch_size=64, lr=2e-3)


def as_images(x) -> np.ndarray:
    """float32 NCHW in [0, 1]: uint8 (N, 28, 28) digits are scaled by `training.images_for`, floats are kept."""
    x = np.asarray(x)
    return training.images_for("torch", x) if x.dtype == np.uint8 else np.ascontiguousarray(x, np.float32)


def train_small(x, y, recipe: SmallRecipe = MEMORISE, seed: int = 0):
    """A source_cnn trained by `recipe` on (x, y), in eval mode. Seeded: the weights come from torch.manual_seed(seed),
    the batch order from its own generator, so the same call gives the same model on a CPU."""
    import torch
    import torch.nn.functional as F

    x_t, y_t = torch.from_numpy(as_images(x)), torch.from_numpy(np.asarray(y, np.int64))
    torch.manual_seed(seed)
    model = models.torch_model(ARCHITECTURE)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x_t), generator=generator)
        for i in range(0, len(x_t), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            optimizer.zero_grad()
            F.cross_entropy(model(x_t[idx]), y_t[idx]).backward()
            optimizer.step()
    return model.eval()


def train_shadows(pool_x, pool_y, assignment: np.ndarray, recipe: SmallRecipe = MEMORISE, seed: int = 0,
                  progress_desc: str | None = None) -> np.ndarray:
    """(K, N) φ of K shadow models on the whole pool: shadow k is `train_small` on the pool's examples where
    assignment[k] is True, with seed `seed + 1 + k` (never the target's own `seed`). `progress_desc` names a progress
    bar (none if None; in an executed notebook it is off, as training.py's are)."""
    images, labels = as_images(pool_x), np.asarray(pool_y)
    assignment = np.asarray(assignment, bool)
    if assignment.ndim != 2 or assignment.shape[1] != len(images):
        raise ValueError(f"assignment must be (shadows, {len(images)}); got {assignment.shape}")
    rows = range(len(assignment))
    if progress_desc is not None:
        rows = progress(rows, desc=progress_desc, disable=is_text_mode())
    phi = np.empty(assignment.shape)
    for k in rows:
        shadow = train_small(images[assignment[k]], labels[assignment[k]], recipe, seed + 1 + k)
        phi[k] = confidence_logit(training.torch_logits(shadow, images), labels)
    return phi


# --------------------------------------------------------------------------- DP-SGD with Opacus


@dataclass(frozen=True)
class DpRecipe:
    """DP-SGD: SGD with momentum on Poisson-sampled batches of expected size `batch_size`, each example's gradient
    clipped to `max_grad_norm`; the learning rate decays from `lr` to 0 over all steps (`schedule` "cosine" or
    "linear"; "constant" keeps it). The noise is whatever reaches the target ε at `delta` after `epochs` epochs.
    `physical_batch_size`: compute each sampled batch in pieces of at most this many examples (Opacus'
    BatchMemoryManager); the update and the privacy accounting are the batch's, the speed the pieces'."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    max_grad_norm: float
    delta: float = 1e-5  # below 1/60,000, the number of training images, as δ must be
    seed: int = 0
    accountant: str = "prv"
    schedule: str = "cosine"
    physical_batch_size: int | None = None  # None: the whole sampled batch at once


SCHEDULES = ("constant", "cosine", "linear")
# 1,024 per step for the accountant, 256 at a time for the CPU: nearly twice as fast here (measured), same update
DP_RECIPE = DpRecipe(epochs=3, batch_size=1024, lr=8.0, momentum=0.9, max_grad_norm=0.5, physical_batch_size=256)


@dataclass(frozen=True, eq=False)
class DpResult:
    model: object  # the plain torch nn.Module, eval mode, no Opacus hooks: ready for torch.onnx.export
    epsilon: float  # spent, by the accountant, at `delta`
    noise_multiplier: float  # σ: the noise's standard deviation, in units of max_grad_norm
    delta: float
    seconds_per_epoch: list[float]
    val_accuracy: list[float]  # after each epoch, if a validation set was given


def dp_learning_rate(step: int, total_steps: int, recipe: DpRecipe) -> float:
    """`recipe.lr` decayed to 0 over `total_steps` steps by `recipe.schedule` (the rate of step `step`, from 0)."""
    done = min(1.0, step / max(1, total_steps))
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "linear":
        return recipe.lr * (1 - done)
    if recipe.schedule == "cosine":
        return 0.5 * recipe.lr * (1 + math.cos(math.pi * done))
    raise ValueError(f"unknown schedule {recipe.schedule!r}; choose one of {SCHEDULES}")


@contextlib.contextmanager
def harmless_opacus_warnings_ignored():
    """Inside the block, the warnings Opacus (and torch under it) gives on every run of `train_dp`, all harmless, are
    not shown; any other warning is."""
    with warnings.catch_warnings():
        # PrivacyEngine(secure_mode=False): the noise and the sampling come from torch's ordinary generator, which is what
        # makes the training reproducible. A real release would retrain with secure_mode=True (and torchcsprng).
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        # The PRV accountant sizes its discretisation domain with an RDP bound, and at these ε the best RDP order is the
        # largest it tries. That only widens the domain: the ε the PRV accountant returns is not the RDP one.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", category=UserWarning)
        # torch, about ghost clipping's backward hooks: the images do not require gradients, so the hooks see gradients
        # with respect to the layers' outputs, which is all ghost clipping needs.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        yield


def as_tensors(x, y):
    import torch

    return torch.from_numpy(as_images(x)), torch.from_numpy(np.asarray(y, np.int64))


def train_dp(x, y, target_epsilon: float, recipe: DpRecipe = DP_RECIPE, x_val=None, y_val=None, model=None) -> DpResult:
    """DP-SGD with Opacus: a source_cnn (or `model`) trained on (x, y) for recipe.epochs epochs at (target_epsilon,
    recipe.delta)-DP, the noise multiplier chosen by the accountant to spend exactly that budget.

    The setup is the one Opacus documents, written out so a notebook can repeat it line for line. For the same weights,
    a copy must make torch's random draws in the same order, all from the global generator seeded here:
      1. torch.manual_seed(recipe.seed), then the model built (its initial weights: conv, then linear);
      2. the optimizer, DataLoader, PrivacyEngine and make_private_with_epsilon draw nothing;
      3. every epoch, `for xb, yb in loader` first draws the DataLoader's base seed, then for each batch Poisson
         sampling draws one uniform number per training example (torch.rand(N)), and optimizer.step() draws the
         Gaussian noise, parameter by parameter.
    Anything else drawn in between (a dropout layer, an augmentation, a torch.randperm) changes every later draw."""
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    dp_learning_rate(0, 1, recipe)  # an unknown schedule fails now, not after the setup
    x_t, y_t = as_tensors(x, y)
    torch.manual_seed(recipe.seed)
    model = models.torch_model(ARCHITECTURE) if model is None else model
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    # batch_size here only sets the sampling rate, batch_size / N: Opacus replaces the loader by one whose batches are
    # Poisson samples (each example in with that probability, anew every step), which the privacy accounting assumes.
    loader = DataLoader(TensorDataset(x_t, y_t), batch_size=recipe.batch_size)
    with harmless_opacus_warnings_ignored():
        engine = PrivacyEngine(accountant=recipe.accountant, secure_mode=False)
        private_model, optimizer, criterion, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(), data_loader=loader,
            target_epsilon=target_epsilon, target_delta=recipe.delta, epochs=recipe.epochs,
            max_grad_norm=recipe.max_grad_norm, grad_sample_mode="ghost", poisson_sampling=True)
        total_steps, step = recipe.epochs * len(loader), 0
        seconds, val_accuracy = [], []
        for _ in range(recipe.epochs):
            started = time.perf_counter()
            private_model.train()
            with physical_batches(loader, optimizer, recipe.physical_batch_size) as batches:
                for xb, yb in batches:
                    for group in optimizer.param_groups:
                        group["lr"] = dp_learning_rate(step, total_steps, recipe)
                    optimizer.zero_grad()  # (between the pieces of one batch, Opacus keeps the clipped sum so far)
                    loss = criterion(private_model(xb), yb)
                    loss.backward()  # ghost clipping: two backward passes, the second with each example's loss rescaled
                    optimizer.step()  # the clipped sum, plus noise, averaged over the expected batch size
                    step += not optimizer._is_last_step_skipped  # a piece before a batch's last takes no step
            seconds.append(time.perf_counter() - started)
            if x_val is not None:
                val_accuracy.append(float((training.torch_logits(model, as_images(x_val)).argmax(1) == np.asarray(y_val)).mean()))
        epsilon = engine.get_epsilon(recipe.delta)
    plain = private_model.to_standard_module()  # the model passed in, its hooks and per-sample attributes removed
    return DpResult(model=plain.eval(), epsilon=float(epsilon), noise_multiplier=float(optimizer.noise_multiplier),
                    delta=recipe.delta, seconds_per_epoch=seconds, val_accuracy=val_accuracy)


def physical_batches(loader, optimizer, max_size: int | None):
    """A context giving `loader`'s batches, each split into pieces of at most `max_size` examples that the optimizer
    adds up before its one step (Opacus' BatchMemoryManager); `max_size` None: the batches themselves."""
    from contextlib import nullcontext

    from opacus.utils.batch_memory_manager import BatchMemoryManager
    if max_size is None:
        return nullcontext(loader)
    return BatchMemoryManager(data_loader=loader, max_physical_batch_size=max_size, optimizer=optimizer)


def train_plain_epoch_seconds(x, y, recipe: DpRecipe = DP_RECIPE) -> float:
    """Seconds for one epoch of the same model and loop without Opacus: shuffled batches of the size DP-SGD computes
    at once (recipe.physical_batch_size, else batch_size), the same SGD with momentum, no clipping and no noise.
    What DP-SGD costs in time is `train_dp`'s seconds over this."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    x_t, y_t = as_tensors(x, y)
    torch.manual_seed(recipe.seed)
    model = models.torch_model(ARCHITECTURE)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    # the batches DP-SGD computes at once: the same work per example, without the clipping and the noise
    loader = DataLoader(TensorDataset(x_t, y_t), batch_size=recipe.physical_batch_size or recipe.batch_size, shuffle=True)
    total_steps = len(loader)
    started = time.perf_counter()
    model.train()
    for step, (xb, yb) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = dp_learning_rate(step, total_steps, recipe)
        optimizer.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    return time.perf_counter() - started
