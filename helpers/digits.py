"""Pen strokes -> a 28x28 MNIST-style image: the Python twin of `web/preprocess.js`.

The browser demo (chapter 09) turns what the learner draws into the model's input the way MNIST's images were made:
crop to the ink's bounding box, scale it to fit a 20x20 box keeping its aspect ratio (anti-aliased), then translate
it so its centre of mass sits at the centre of the 28x28 frame. Both twins compute the same float64 operations in
the same order, so they agree bit for bit (a test runs the JavaScript in Node.js and in Chromium against this).

A stroke is a list of (x, y) points in canvas pixels (a `CANVAS_SIZE` square canvas); the pen is a disc of radius
`PEN_RADIUS`. Each output pixel is the fraction of its SUPERSAMPLE x SUPERSAMPLE sample points the pen covered.
"""

from __future__ import annotations

import math

import numpy as np

CANVAS_SIZE = 280  # the page's canvas, in CSS pixels: 10x MNIST's 28
PEN_RADIUS = 10.0  # canvas pixels; a 200-pixel digit ends up with ~2-pixel strokes, as in MNIST
BOX, SIZE, SUPERSAMPLE = 20, 28, 4  # fit into BOX x BOX, centre in SIZE x SIZE, SUPERSAMPLE^2 samples per pixel
GRID = SIZE * SUPERSAMPLE
LIMIT = 1e6  # |coordinate| bound, in canvas pixels: keeps every intermediate finite in both twins


def check_strokes(strokes) -> list[np.ndarray]:
    """Each stroke as a float64 (n, 2) array; a clear ValueError for anything else."""
    checked = []
    for index, stroke in enumerate(strokes):
        points = np.asarray(stroke, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0 or not np.isfinite(points).all():
            raise ValueError(f"stroke {index} must be a non-empty list of finite (x, y) points, got shape {points.shape}")
        if np.abs(points).max() > LIMIT:
            raise ValueError(f"stroke {index} has a point beyond {LIMIT:.0e} canvas pixels")
        checked.append(points)
    return checked


def segments(strokes: list[np.ndarray]) -> list[tuple[float, float, float, float]]:
    """(ax, ay, bx, by) for each pen movement; a single-point stroke (a dot) is a segment of length 0."""
    result = []
    for points in strokes:
        pairs = zip(points[:-1], points[1:]) if len(points) > 1 else [(points[0], points[0])]
        result += [(float(a[0]), float(a[1]), float(b[0]), float(b[1])) for a, b in pairs]
    return result


def ink_box(strokes: list[np.ndarray]):
    """(x0, y0, scale, ox, oy): canvas (x, y) maps to 28x28 frame coordinates ((x - x0) * scale + ox, ...)."""
    points = np.concatenate(strokes)
    x0, y0 = float(points[:, 0].min()) - PEN_RADIUS, float(points[:, 1].min()) - PEN_RADIUS
    width, height = float(points[:, 0].max()) + PEN_RADIUS - x0, float(points[:, 1].max()) + PEN_RADIUS - y0
    scale = BOX / max(width, height)
    return x0, y0, scale, (SIZE - width * scale) / 2, (SIZE - height * scale) / 2


def sample_range(low: float, high: float, origin: float, scale: float, offset: float) -> tuple[int, int]:
    """Sample indices that can lie within [low, high] canvas pixels, one sample of margin each side (conservative)."""
    first = math.floor(((low - origin) * scale + offset) * SUPERSAMPLE - 0.5) - 1
    last = math.floor(((high - origin) * scale + offset) * SUPERSAMPLE - 0.5) + 2
    return max(first, 0), min(last, GRID)


def coverage(strokes: list[np.ndarray]) -> np.ndarray:
    """(SIZE, SIZE) float64: the fraction of each pixel's sample points within PEN_RADIUS of a pen movement."""
    x0, y0, scale, ox, oy = ink_box(strokes)
    covered = np.zeros((GRID, GRID), dtype=bool)
    centres = (np.arange(GRID) + 0.5) / SUPERSAMPLE  # sample positions in frame coordinates
    xs, ys = x0 + (centres - ox) / scale, y0 + (centres - oy) / scale  # ... and on the canvas
    r2 = PEN_RADIUS * PEN_RADIUS
    for ax, ay, bx, by in segments(strokes):
        c0, c1 = sample_range(min(ax, bx) - PEN_RADIUS, max(ax, bx) + PEN_RADIUS, x0, scale, ox)
        r0, r1 = sample_range(min(ay, by) - PEN_RADIUS, max(ay, by) + PEN_RADIUS, y0, scale, oy)
        if c0 >= c1 or r0 >= r1:
            continue
        x, y = xs[None, c0:c1], ys[r0:r1, None]
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = ((x - ax) * dx + (y - ay) * dy) / length2 if length2 > 0 else np.zeros_like(x + y)
        t = np.minimum(1.0, np.maximum(0.0, t))
        ex, ey = x - (ax + t * dx), y - (ay + t * dy)
        covered[r0:r1, c0:c1] |= ex * ex + ey * ey <= r2
    counts = covered.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).sum(axis=(1, 3))
    return counts / (SUPERSAMPLE * SUPERSAMPLE)


def centre_by_mass(image: np.ndarray) -> np.ndarray:
    """Translate by whole pixels so the centre of mass is at the frame's centre, as MNIST did (ink shifted out is lost).
    An image with no ink (a drawing so wide the pen falls between the samples) stays blank."""
    total = image.sum()
    if total == 0:
        return image
    rows = np.arange(SIZE, dtype=np.float64)
    cy, cx = (image.sum(axis=1) @ rows) / total, (image.sum(axis=0) @ rows) / total  # exact: values are k/16
    dy, dx = math.floor((SIZE - 1) / 2 - cy + 0.5), math.floor((SIZE - 1) / 2 - cx + 0.5)
    out = np.zeros_like(image)
    out[max(dy, 0) : SIZE + min(dy, 0), max(dx, 0) : SIZE + min(dx, 0)] = \
        image[max(-dy, 0) : SIZE - max(dy, 0), max(-dx, 0) : SIZE - max(dx, 0)]
    return out


def strokes_to_image(strokes) -> np.ndarray:
    """(28, 28) float32 in [0, 1], MNIST style; all zeros when nothing was drawn."""
    strokes = check_strokes(strokes)
    if not strokes:
        return np.zeros((SIZE, SIZE), dtype=np.float32)
    return centre_by_mass(coverage(strokes)).astype(np.float32)


def image_to_strokes(image: np.ndarray, threshold: int = 128) -> list[list[tuple[float, float]]]:
    """A 28x28 uint8 digit as pen strokes on the canvas: one horizontal stroke per run of ink pixels in a row.

    This is how the notebook and the tests "draw" MNIST digits with the mouse; the strokes are thicker than the
    original's ink by about the pen's radius, which the page's preprocessing then scales back.
    """
    if image.shape != (SIZE, SIZE):
        raise ValueError(f"expected a {SIZE}x{SIZE} image, got shape {image.shape}")
    pixel = CANVAS_SIZE / SIZE
    strokes = []
    for row in range(SIZE):
        ink = np.flatnonzero(image[row] >= threshold)
        if not len(ink):
            continue
        breaks = np.flatnonzero(np.diff(ink) > 1)
        for start, end in zip(np.r_[ink[0], ink[breaks + 1]], np.r_[ink[breaks], ink[-1]]):
            y = (row + 0.5) * pixel
            strokes.append([((start + 0.5) * pixel, y), ((end + 0.5) * pixel, y)])
    return strokes


def random_scribbles(rng: np.random.Generator, count: int, max_strokes: int = 3, max_points: int = 25,
                     margin: int = int(PEN_RADIUS)) -> list:
    """`count` drawings of 1-`max_strokes` random zigzags, not digits: points on whole canvas pixels at least `margin`
    from the edges, so the mouse can draw them exactly (a negative margin puts some points off the canvas)."""
    drawings = []
    for _ in range(count):
        drawings.append([[(float(x), float(y)) for x, y in rng.integers(margin, CANVAS_SIZE - margin + 1, (rng.integers(1, max_points), 2))]
                         for _ in range(rng.integers(1, max_strokes + 1))])
    return drawings
