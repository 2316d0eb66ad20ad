"""Attribution maps of the course's PyTorch CNNs, computed with Captum, and the tests that say whether to trust them
(chapter 13; the inference server's `:explain` route calls `attribute` too, through helpers.serving.explainer).

An attribution map gives every input pixel a number: how much it pushed one class's score (the logit of `target`).
Three classic methods, each one Captum call (`attribute(..., method=...)`):

* "saliency" (Simonyan et al. 2014): |∂f_t/∂x|, the absolute gradient of the class score. One backward pass; says
  which pixels the score is *sensitive* to, not which way they push it.
* "integrated_gradients" (Sundararajan et al. 2017): (x − b) · ∫₀¹ ∂f_t/∂x (b + α(x − b)) dα, the gradient averaged
  along the straight path from a baseline image b (all `baseline`, black by default) to x. Its maps are signed and
  *complete*: they sum to f_t(x) − f_t(b) — exactly for the integral, up to the quadrature error for a finite sum.
* "occlusion" (Zeiler and Fergus 2014): slide a `window`×`window` patch of `baseline` over the image in steps of
  `stride`; each pixel gets the mean drop of the score over the patches that covered it. No gradients at all.

The integral is a Riemann sum, and Captum's rule is chosen so the notebook can write it again in four lines and get
the same numbers: the *midpoint* rule ("riemann_middle"), `steps` gradients at α = (k + ½)/steps, k = 0..steps−1,
each weighted 1/steps. Not Captum's "riemann_trapezoid": its alphas are linspace(0, 1, steps) but its weights are
1/steps (halved at both ends), so they sum to 1 − 1/steps instead of 1, and every map comes out short by a factor
(steps − 1)/steps — a completeness gap of about 1/steps that no number of steps removes (measured on a trained
source_cnn: 2.9 % at 32 steps, 1.5 % at 64), and a by-hand textbook trapezoid would not match it. The midpoint rule
is as accurate as a correct trapezoid (error ~1/steps²) and its weights do sum to 1 (median gap 0.1 % at 32 steps).
Gauss-Legendre, Captum's default, is a little more accurate still but its nodes and weights are not something a
learner writes by hand.

`completeness_gap` measures the gap; `deletion_curve` checks a map against the model (delete the pixels the map ranks
highest: if they are the ones the model uses, accuracy falls faster than when deleting pixels at random); and
`randomisation_check` is Adebayo et al.'s sanity check (2018): a map that barely changes when the model's weights are
replaced by random ones is explaining the input, not the model.

Thread safety (the server calls `attribute` from a thread pool on one shared model): `attribute` mutates nothing —
no module state, no model attribute, no parameter .grad. It refuses a model in training mode (dropout would make
the map random) rather than switching it to eval mode itself; `prepare(model)` does that once, and also turns off
requires_grad on the parameters, since only the *input* needs a gradient. Captum differentiates with
torch.autograd.grad(outputs, inputs), which returns the input's gradient and never accumulates into a parameter's
.grad, so even an unprepared model (in eval mode) is left untouched — preparing only spares autograd the work.

Inputs are float32 NCHW numpy arrays (`x`), int class indices (`targets`, one per image); models output logits.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

METHODS = ("saliency", "integrated_gradients", "occlusion")
IG_RULE = "riemann_middle"  # see the module docstring: the rule a learner can write, with weights summing to 1
BATCH = 512  # the most images in one forward pass when internal_batch_size is None: bounds memory (IG at 256 steps)


# --------------------------------------------------------------------------- the model and the inputs


def prepare(model):
    """`model` ready to be explained, from any number of threads: eval mode (dropout off) and no parameter needing a
    gradient (only the input does). Returns the same model. Training it again needs `requires_grad_(True)` on its
    parameters (`model.requires_grad_(True)`) and `model.train()`."""
    model.eval()
    model.requires_grad_(False)
    return model


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {METHODS}")


def check_model(model) -> None:
    if model.training:
        raise ValueError("the model is in training mode (dropout would make every map random): call "
                         "attributions.prepare(model) (or model.eval()) once before explaining it")


def described(x) -> str:
    return f"{type(x).__name__} of shape {getattr(x, 'shape', '?')} and dtype {getattr(x, 'dtype', '?')}"


def check_images(x) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype != np.float32 or len(x) == 0:
        raise ValueError(f"x must be a non-empty float32 numpy array of shape (N, C, H, W), got {described(x)}")


def n_classes(model, x: np.ndarray) -> int:
    """The number of logits the model outputs, from one image."""
    import torch

    with torch.no_grad():
        return int(model(torch.tensor(x[:1])).shape[1])


def as_inputs(model, x: np.ndarray, targets) -> tuple:
    """(images, targets) as torch tensors after checking them: ValueError naming what is wrong. The images are a copy
    (torch.tensor copies), so Captum can set requires_grad on its own tensor and a read-only array is fine."""
    import torch

    check_model(model)
    check_images(x)
    targets = np.asarray(targets)
    if targets.shape != (len(x),) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be {len(x)} integer class indices, one per image, got {described(targets)}")
    classes = n_classes(model, x)
    if targets.min() < 0 or targets.max() >= classes:
        raise ValueError(f"targets must be class indices in [0, {classes}), got values from {targets.min()} to "
                         f"{targets.max()}")
    return torch.tensor(x), torch.as_tensor(targets, dtype=torch.int64)


def class_scores(model, x, targets) -> np.ndarray:
    """f_t(x) for each image: the target's logit, as float64 (the score every attribution explains)."""
    import torch

    with torch.no_grad():
        logits = model(torch.as_tensor(x))
    return logits.gather(1, torch.as_tensor(targets).view(-1, 1))[:, 0].double().numpy()


# --------------------------------------------------------------------------- the three methods


def attribute(model, x: np.ndarray, targets: np.ndarray, method: str, *, steps: int = 32, baseline: float = 0.0,
              window: int = 4, stride: int = 2, internal_batch_size: int | None = None) -> np.ndarray:
    """Attribution maps of `x` (float32, (N, C, H, W)) for the classes `targets` (N ints): float32, the shape of `x`.

    method "saliency": |∂f_t/∂x|. "integrated_gradients": `steps` midpoint-rule steps from the all-`baseline` image.
    "occlusion": a (C, window, window) patch of `baseline` moved by `stride` pixels. `internal_batch_size` is the most
    images in one forward pass (None: BATCH); integrated gradients runs at least one step of every image per pass.
    Thread-safe on a shared model (see the module docstring); the model must be in eval mode (`prepare`)."""
    import torch
    from captum.attr import IntegratedGradients, Occlusion, Saliency

    check_method(method)
    inputs, target = as_inputs(model, x, targets)
    per_pass = BATCH if internal_batch_size is None else internal_batch_size
    # no_grad: nothing outside Captum's own gradient computation (which turns gradients on for itself) builds a graph
    with torch.no_grad():
        if method == "saliency":
            # each chunk a leaf that requires a gradient already, as Saliency expects (it warns otherwise)
            maps = torch.cat([Saliency(model).attribute(inputs[i : i + per_pass].clone().requires_grad_(),
                                                        target=target[i : i + per_pass], abs=True)
                              for i in range(0, len(inputs), per_pass)])
        elif method == "integrated_gradients":
            maps = IntegratedGradients(model).attribute(inputs, baselines=baseline, target=target, n_steps=steps,
                                                        method=IG_RULE, internal_batch_size=max(per_pass, len(inputs)))
        else:
            channels = inputs.shape[1]  # a patch covers every channel: it hides a region of the image
            maps = Occlusion(model).attribute(inputs, sliding_window_shapes=(channels, window, window),
                                              strides=(1, stride, stride), baselines=baseline, target=target,
                                              perturbations_per_eval=max(1, per_pass // len(inputs)))
    return maps.detach().numpy().astype(np.float32)


def integrated_gradients_with_delta(model, x: np.ndarray, targets: np.ndarray, steps: int = 32, baseline: float = 0.0,
                                    internal_batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(maps, delta): integrated gradients as `attribute` computes them, and Captum's convergence delta per image,
    Σ map − (f_t(x) − f_t(baseline)): the completeness error, in logit units (float32, shape (N,))."""
    import torch
    from captum.attr import IntegratedGradients

    inputs, target = as_inputs(model, x, targets)
    per_pass = BATCH if internal_batch_size is None else internal_batch_size
    with torch.no_grad():
        maps, delta = IntegratedGradients(model).attribute(inputs, baselines=baseline, target=target, n_steps=steps,
                                                           method=IG_RULE, internal_batch_size=max(per_pass, len(inputs)),
                                                           return_convergence_delta=True)
    return maps.detach().numpy().astype(np.float32), delta.detach().numpy().astype(np.float32)


def completeness_gap(model, x: np.ndarray, targets: np.ndarray, attributions: np.ndarray,
                     baseline: float = 0.0) -> np.ndarray:
    """|Σ map − (f_t(x) − f_t(b))| / |f_t(x) − f_t(b)| per image (float64): 0 for maps that are exactly complete.
    Integrated gradients should be within a percent; saliency and occlusion are not complete and need not be.
    An image whose score equals the baseline's has no change to share out: its gap is inf (or nan)."""
    inputs, target = as_inputs(model, x, targets)
    change = class_scores(model, inputs, target) - class_scores(model, np.full_like(x, baseline), target)
    total = np.asarray(attributions, np.float64).reshape(len(x), -1).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(total - change) / np.abs(change)


# --------------------------------------------------------------------------- deletion: does the map find what the model uses?


def deletion_order(attributions: np.ndarray | None, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Each pixel's rank per image (0 = deleted first): by attribution, highest first, ties (such as the zeros of
    integrated gradients on black pixels) in a seeded random order; all at random for attributions=None."""
    n, pixels = shape[0], int(np.prod(shape[1:]))
    random = np.random.default_rng(seed).random((n, pixels))
    if attributions is None:
        order = np.argsort(random, axis=1)
    else:
        # lexsort sorts by its last key first: the attribution (negated: descending), then the random tie-break
        order = np.lexsort((random, -np.asarray(attributions, np.float64).reshape(n, pixels)), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(pixels)[None].repeat(n, 0), axis=1)
    return ranks


def deletion_curve(model, x: np.ndarray, y: np.ndarray, attributions: np.ndarray | None, fractions, *,
                   fill: float = 0.0, seed: int = 0, batch_size: int = 1000) -> np.ndarray:
    """Accuracy on `y` after setting, in every image, the `fraction` of its pixels with the highest attribution to
    `fill`, for each fraction (float64, one per fraction). attributions=None deletes pixels in a seeded random order:
    the curve any map must beat.

    The signed value is ranked as given, highest first, so the first pixels deleted are those that most *support*
    the explained class (for saliency, whose maps are absolute, those the score is most sensitive to). The faster
    accuracy falls, the better the map found the pixels the model uses: compare `curve_area`s, lower is better."""
    import torch

    check_model(model)
    check_images(x)
    if attributions is not None and np.shape(attributions) != x.shape:
        raise ValueError(f"attributions must have the shape of x, {x.shape}, got {np.shape(attributions)}")
    ranks = deletion_order(attributions, x.shape, seed)
    flat, pixels = x.reshape(len(x), -1), ranks.shape[1]
    y = np.asarray(y)
    accuracies = []
    for fraction in fractions:
        deleted = np.where(ranks < int(round(fraction * pixels)), np.float32(fill), flat).reshape(x.shape)
        with torch.no_grad():
            predicted = np.concatenate([model(torch.from_numpy(deleted[i : i + batch_size])).argmax(1).numpy()
                                        for i in range(0, len(x), batch_size)])
        accuracies.append(float((predicted == y).mean()))
    return np.asarray(accuracies)


def curve_area(fractions, values) -> float:
    """Area under a deletion curve by the trapezoid rule, divided by the span of the fractions: the mean accuracy
    over the curve, in [0, 1] (lower: the map ranked first the pixels the model needs)."""
    fractions, values = np.asarray(fractions, np.float64), np.asarray(values, np.float64)
    return float(np.trapezoid(values, fractions) / (fractions.max() - fractions.min()))


# --------------------------------------------------------------------------- the model-parameter randomisation test


def parameter_layers(model) -> list[tuple[str, object]]:
    """(name, module) of each layer holding parameters of its own and a reset_parameters(), in definition order
    (for an nn.Sequential, the order the input goes through them)."""
    return [(name, module) for name, module in model.named_modules()
            if list(module.parameters(recurse=False)) and hasattr(module, "reset_parameters")]


def randomised_copies(model, seed: int = 0) -> list[tuple[str, object]]:
    """Adebayo et al.'s cascade: (layer, copy) for each parameter layer from the output down, where copy k has the
    top k layers re-initialised (each by its own reset_parameters(), so to the distribution it was trained from) and
    the rest as trained. Each copy extends the one before, so a layer has the same random weights in every copy
    after it. The layer's name is "<module path> <type>", e.g. "4 Linear". `model` itself is left untouched, and so
    is the global random state (each draw is seeded, in a forked generator)."""
    import torch

    copies, current = [], model
    for position, (name, _) in enumerate(reversed(parameter_layers(model))):
        current = copy.deepcopy(current)
        layer = current.get_submodule(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + position)
            layer.reset_parameters()
        copies.append((f"{name} {type(layer).__name__}", current))
    return copies


def rank_correlations(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Spearman's rank correlation between a[i] and b[i], flattened, per example: the Pearson correlation of their
    ranks (ties share their mean rank, as in scipy.stats.spearmanr). `where` (a boolean array of their shape) keeps
    only the pixels it marks, a different set per example. nan where a map is constant (or fewer than two pixels)."""
    from scipy.stats import rankdata

    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if where is not None:
        keep = np.asarray(where, bool).reshape(len(a), -1)
        return np.array([rank_correlations(a[i][keep[i]][None], b[i][keep[i]][None])[0] if keep[i].sum() > 1
                         else np.nan for i in range(len(a))])
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))


def randomisation_check(model, x: np.ndarray, targets: np.ndarray, methods=METHODS, seed: int = 0,
                        **attribute_kwargs) -> pd.DataFrame:
    """One row per method and cascade step: method, layers (how many randomised, 0 = the trained model against
    itself), randomised (their names from the top down), spearman (mean over images of the rank correlation of the
    absolute maps of the trained and the randomised model: the paper's main variant), spearman_signed (the same
    without the absolute value) and spearman_strokes (absolute maps, only the pixels where the image differs from
    the baseline: the zeros that integrated gradients and occlusion give every baseline pixel, for any model, are
    shared ranks that would count as agreement). A method passes the check when spearman is low once every layer is random: its maps
    depend on what the model learnt. The numbers are returned, not judged (see `passes`)."""
    copies = [("", model), *randomised_copies(model, seed)]
    strokes = np.asarray(x) != attribute_kwargs.get("baseline", 0.0)
    rows = []
    for method in methods:
        check_method(method)
        trained = attribute(model, x, targets, method, **attribute_kwargs)
        names = []
        for count, (name, randomised) in enumerate(copies):
            names += [name] if name else []
            maps = attribute(randomised, x, targets, method, **attribute_kwargs)
            rows.append({"method": method, "layers": count, "randomised": " + ".join(names) or "none",
                         "spearman": float(np.nanmean(rank_correlations(np.abs(trained), np.abs(maps)))),
                         "spearman_signed": float(np.nanmean(rank_correlations(trained, maps))),
                         "spearman_strokes": float(np.nanmean(rank_correlations(np.abs(trained), np.abs(maps), strokes)))})
    return pd.DataFrame(rows)


def passes(frame: pd.DataFrame, threshold: float, column: str = "spearman") -> pd.Series:
    """method -> whether its mean rank correlation (`column`) with every layer randomised is below `threshold`.
    Adebayo et al. judge by eye and set no threshold, so there is no default: the caller chooses and states one."""
    last = frame[frame["layers"] == frame.groupby("method")["layers"].transform("max")]
    return last.set_index("method")[column] < threshold
