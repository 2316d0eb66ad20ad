"""How production data drifts, simulated on clean test digits. Each shift (`rotate`, `noise`, `dim`, `blur`,
`thicken`, collected in `SHIFTS`) turns float images into drifted ones at a chosen severity; `apply_shift` does it
to uint8 images by name, reproducibly (a seed). `class_prior_shift` changes which classes arrive rather than how they
look, and `severity_for_drop` calibrates a shift to the harm it does: the severity that costs the model a chosen
number of accuracy points, so that shifts of different kinds can be compared at equal harm.
"""

from __future__ import annotations

import numpy as np


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
