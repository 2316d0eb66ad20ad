"""Figures the chapters share, so every notebook draws them the same way, and the checks that keep them honest.

The rules (docs/contributing.md, "Figures") and what enforces them:

* a quantity whose ratios matter, on a log axis, is drawn as points (`dot_plot`), never as bars: `check` refuses bars
  on a log axis, and bars whose base or end lies outside the axis (a truncated or clipped bar misstates its length);
* every axis that shows tick labels has a label (with its unit): `check`;
* every colour scale has a colour bar: `check`;
* a Pareto front is drawn only through two points or more: `front_line` refuses fewer, `check` refuses a line labelled
  "front" with fewer;
* no two texts overlap, and no legend covers data: `check`, after drawing, from the texts' bounding boxes;
  `annotate_apart` places point labels where they fit;
* an axis that spans less than the noise of what it shows says so: `noise_axis` (with `binomial_noise` for an accuracy);
* a target in a published table reads "met" or "not met" and by how much (`verdict`), never a bare True/False.

Every helper here calls `check` on the figure it returns; a figure drawn in a notebook ends with `plots.check(fig)`.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.container import BarContainer
from matplotlib.legend import Legend
from matplotlib.text import Annotation, Text
from matplotlib.ticker import EngFormatter, FuncFormatter, MaxNLocator, PercentFormatter


class FigureError(ValueError):
    """A figure breaks one of the course's figure rules (docs/contributing.md, "Figures")."""


# ---------------------------------------------------------------------------------------------------------- the checks

def check(fig, axes=None):
    """Raise FigureError, naming every problem, if `fig` breaks a rule that can be checked after drawing; else return it.
    `axes` limits the check to those axes of `fig` (a helper drawing one panel of a caller's figure checks its own)."""
    found = problems(fig, axes)
    if found:
        raise FigureError("this figure breaks the figure rules (docs/contributing.md, Figures):\n- " + "\n- ".join(found))
    return fig


def problems(fig, axes=None) -> list[str]:
    """Every checkable rule `fig` (or only its `axes`) breaks, as sentences (empty: none). Draws the figure first: text
    sizes and tick labels exist only once it is drawn."""
    renderer = _renderer(fig)
    axes = list(fig.axes if axes is None else axes)
    found = []
    for ax in axes:
        if not ax.get_visible():
            continue
        name = _name(ax)
        if ax.axison and not hasattr(ax, "_colorbar"):
            found += [f"{name}: {p}" for p in _bar_problems(ax) + _colour_problems(ax) + _front_problems(ax)]
            found += [f"{name}: {p}" for p in _legend_problems(ax, renderer)]
        if ax.axison:
            found += [f"{name}: {p}" for p in _label_problems(ax, renderer)]
    return found + _overlap_problems(fig, axes, renderer)


def _renderer(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _name(ax) -> str:
    if hasattr(ax, "_colorbar"):
        return "the colour bar"
    title = ax.get_title() or ax.get_title("left") or ax.figure.get_suptitle() or ""
    index = ax.figure.axes.index(ax)
    return f"axes {index}" + (f" ({title.splitlines()[0][:60]!r})" if title else "")


def _bar_problems(ax) -> list[str]:
    found = []
    for container in ax.containers:
        if not isinstance(container, BarContainer) or not container.patches:
            continue
        vertical = getattr(container, "orientation", "vertical") == "vertical"
        axis = "y" if vertical else "x"
        if (ax.get_yscale() if vertical else ax.get_xscale()) != "linear":
            found.append(f"bars on a log {axis} axis: a bar's length there misstates the ratios; draw points (plots.dot_plot)")
            continue
        low, high = sorted(ax.get_ylim() if vertical else ax.get_xlim())
        tolerance = 1e-9 * (high - low)
        for patch in container.patches:
            start, size = (patch.get_y(), patch.get_height()) if vertical else (patch.get_x(), patch.get_width())
            if not (math.isfinite(start) and math.isfinite(size)) or size == 0:
                continue
            if min(start, start + size) < low - tolerance:
                found.append(f"a bar starts below the {axis} axis' lower limit ({low:g}): a truncated bar misstates its length")
                break
            if max(start, start + size) > high + tolerance:
                found.append(f"a bar ends beyond the {axis} axis' upper limit ({high:g}): the longest bar is clipped")
                break
    return found


def _colour_problems(ax) -> list[str]:
    mappables = [image for image in ax.images if np.ndim(image.get_array()) == 2]  # RGB pictures have no scale
    mappables += [c for c in ax.collections if hasattr(c, "get_array") and c.get_array() is not None and c.get_cmap() is not None]
    return ["a colour scale without a colour bar (fig.colorbar(mappable, ax=ax, label=...))"
            for m in mappables if getattr(m, "colorbar", None) is None][:1]


def _front_problems(ax) -> list[str]:
    found = []
    for line in ax.lines:
        label = str(line.get_label())
        if "front" in label.lower() and not label.startswith("_"):
            xy = np.asarray(line.get_xydata(), float)
            points = {tuple(p) for p in xy[np.isfinite(xy).all(axis=1)]}
            if len(points) < 2:
                found.append(f"a line labelled {label!r} through {len(points)} point(s): a front needs two points or more")
    return found


def _shown_tick_labels(axis):
    labels = []
    for tick in axis._update_ticks():  # the ticks drawn: those inside the view
        labels += [t for t in (tick.label1, tick.label2) if t.get_visible() and t.get_text().strip()]
    return labels


def _label_problems(ax, renderer) -> list[str]:
    found = []
    for letter, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        if _shown_tick_labels(axis) and not (axis.label.get_visible() and axis.label.get_text().strip()):
            found.append(f"the {letter} axis has tick labels but no label (say what it shows, with its unit)")
    return found


def _legends(ax):
    """The axes' legends: its own and any added with ax.add_artist (a second legend, a key)."""
    return [c for c in ax.get_children() if isinstance(c, Legend) and c.get_visible()]


def _legend_problems(ax, renderer) -> list[str]:
    return [p for legend in _legends(ax) for p in _legend_covers(ax, legend, renderer)]


def _legend_covers(ax, legend, renderer) -> list[str]:
    box = legend.get_window_extent(renderer).padded(-2)
    if not box.overlaps(ax.get_window_extent(renderer)):
        return []
    points = [_dense(ax.transData.transform(np.asarray(line.get_xydata(), float)))
              for line in ax.lines if line.get_visible() and line.get_transform() is ax.transData]
    points += [ax.transData.transform(np.asarray(c.get_offsets(), float)) for c in ax.collections
               if c.get_visible() and c.get_offset_transform() is ax.transData and len(c.get_offsets())]
    covered = any(np.any((p[:, 0] > box.x0) & (p[:, 0] < box.x1) & (p[:, 1] > box.y0) & (p[:, 1] < box.y1)) for p in points if len(p))
    covered = covered or any(patch.get_window_extent(renderer).overlaps(box) for container in ax.containers
                             if isinstance(container, BarContainer) for patch in container.patches if patch.get_visible())
    return ["the legend covers data (move it outside the axes: loc='upper left', bbox_to_anchor=(1.01, 1))"] if covered else []


def _dense(points, step: float = 2.0):
    """The points of a polyline in display coordinates, with points added every `step` pixels along each segment."""
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) < 2:
        return points
    pieces = []
    for a, b in zip(points[:-1], points[1:]):
        n = max(2, int(np.hypot(*(b - a)) / step) + 1)
        pieces.append(a + np.linspace(0, 1, n)[:, None] * (b - a))
    return np.concatenate(pieces)


def _texts(fig, axes):
    """(description, Text or Legend, the axes it belongs to or None) for every text a reader sees: titles, axis and tick
    labels, annotations, legends, the figure's own texts."""
    seen, texts = set(), []

    def add(what, artist, owner):
        if id(artist) in seen or not artist.get_visible():
            return
        if hasattr(artist, "get_text") and not artist.get_text().strip():
            return
        seen.add(id(artist))
        texts.append((what, artist, owner))

    for text in fig.texts:
        add(f"figure text {text.get_text()[:40]!r}", text, None)
    for legend in fig.legends:
        add("the figure legend", legend, None)
    for ax in axes:
        if not ax.get_visible():
            continue
        name = _name(ax)
        for title in (ax.title, ax._left_title, ax._right_title):
            add(f"{name} title", title, ax)
        for text in ax.texts:
            add(f"{name} text {text.get_text()[:40]!r}", text, ax)
        for k, legend in enumerate(_legends(ax)):
            add(f"{name} legend" + (f" {k + 1}" if k else ""), legend, ax)
        if ax.axison:
            for letter, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                add(f"{name} {letter} label", axis.label, ax)
                for tick in _shown_tick_labels(axis):
                    add(f"{name} {letter} tick label {tick.get_text()!r}", tick, ax)
    return texts


def _overlap_problems(fig, axes, renderer) -> list[str]:
    """Texts that overlap each other, and texts that run into the plotting area of another axes than their own."""
    texts = _texts(fig, axes)
    # an annotation's own extent includes its leader line; the text is what must not overlap
    boxes = np.array([tuple((Text.get_window_extent(a, renderer) if isinstance(a, Annotation) else a.get_window_extent(renderer)).extents)
                      for _, a, _ in texts]).reshape(-1, 4)

    def overlapping(box, others):
        dx = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
        dy = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
        return np.flatnonzero((dx > 1) & (dy > 1))

    found = []
    for i in range(len(texts)):
        found += [f"{texts[i][0]} overlaps {texts[i + 1 + j][0]}" for j in overlapping(boxes[i], boxes[i + 1:])]
    panels = [ax for ax in axes if ax.get_visible() and ax.axison]
    frames = np.array([tuple(ax.get_window_extent(renderer).extents) for ax in panels]).reshape(-1, 4)
    for (what, _, owner), box in zip(texts, boxes):
        found += [f"{what} runs into {_name(panels[j])}" for j in overlapping(box, frames) if panels[j] is not owner]
    return found


# ------------------------------------------------------------------------------------------------ drawing by the rules

def front_line(ax, x, y, label: str = "Pareto front", **style):
    """Join the members of a Pareto front, ordered by `x`, with a dashed line. A front of one point is not a line: refused."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len({*zip(x, y)}) < 2:
        raise FigureError(f"a Pareto front of {len({*zip(x, y)})} point(s) is not a line; mark the point instead")
    order = np.argsort(x)
    return ax.plot(x[order], y[order], **{"color": "black", "linestyle": "--", "linewidth": 1, "label": label, **style})


def binomial_noise(accuracy, n: int, standard_errors: float = 2.0):
    """The noise of an accuracy measured on `n` images: `standard_errors` binomial standard errors, sqrt(p(1-p)/n) each."""
    accuracy = np.asarray(accuracy, float)
    return standard_errors * np.sqrt(accuracy * (1 - accuracy) / n)


def noise_axis(ax, values, noise: float, what: str, unit: str = "", axis: str = "y", noise_spans: float = 4.0) -> bool:
    """Set the `axis` range to show `values` give or take `noise`, and at least `noise_spans` times `noise`, so that
    noise looks as small as it is; if the values span less than `noise`, say so on the plot (`what` names the noise,
    e.g. "2 standard errors on 10,000 images"; `unit` follows each number, e.g. " points"). Returns whether the note
    was written."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    low, high = values.min(), values.max()
    width = max(high - low + 2.4 * noise, noise_spans * noise, 1e-12)
    centre = (low + high) / 2
    (ax.set_ylim if axis == "y" else ax.set_xlim)(centre - width / 2, centre + width / 2)
    if high - low >= noise:
        return False
    ax.text(0.01, 0.99, f"all values lie within {high - low:.2g}{unit} of each other, less than the noise ({noise:.2g}{unit}, {what}):\n"
            "their order here is not a measured difference", transform=ax.transAxes, ha="left", va="top", fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6", "alpha": 0.9})
    return True


def annotate_apart(ax, x, y, labels, fontsize: float = 7, weights=None, marker_radii=3.0,
                   radii=(3, 8, 14, 22, 32, 44, 58, 74, 92, 112)):
    """Label each point (x, y) at the nearest free spot around it: where the label overlaps no label placed before it
    and no other text of the axes (that first), covers no marker (`marker_radii`, in points: one, or one per point) and
    stays inside the axes. A label placed away from its point gets a leader line. Call it once the figure's layout is
    final (after tight_layout); `check` then confirms that no two labels overlap. Returns the annotations."""
    fig = ax.figure
    renderer = _renderer(fig)
    frame = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
    pixels = fig.dpi / 72
    marker = np.broadcast_to(np.asarray(marker_radii, float), (len(points),)) * pixels
    taken = [t.get_window_extent(renderer) for t in ax.texts if t.get_visible() and t.get_text().strip()]
    taken += [legend.get_window_extent(renderer) for legend in _legends(ax)]
    directions = [(math.cos(a), math.sin(a)) for a in np.radians([45, -45, 135, -135, 0, 180, 90, -90, 20, -20, 160, -160])]
    annotations = []
    for k, ((px, py), label) in enumerate(zip(points, labels)):
        weight = weights[k] if weights is not None else "normal"
        best = None
        for radius in radii:
            for dx, dy in directions:
                offset = ((marker[k] / pixels + radius) * dx, (marker[k] / pixels + radius) * dy)
                ha = "left" if dx > 0.3 else "right" if dx < -0.3 else "center"
                va = "bottom" if dy > 0.3 else "top" if dy < -0.3 else "center"
                trial = ax.annotate(label, (px, py), xycoords="figure pixels", xytext=offset, textcoords="offset points",
                                    ha=ha, va=va, fontsize=fontsize, fontweight=weight)
                box = trial.get_window_extent(renderer)
                trial.remove()
                grown = box.padded(1.5 * pixels)
                texts = sum(grown.overlaps(t) for t in taken)
                markers = int(np.sum((points[:, 0] + marker > grown.x0) & (points[:, 0] - marker < grown.x1)
                                     & (points[:, 1] + marker > grown.y0) & (points[:, 1] - marker < grown.y1)))
                outside = not (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1)
                cost = 1000 * outside + 100 * texts + markers + radius / 1000
                if best is None or cost < best[0]:
                    best = (cost, offset, ha, va, radius, box)
            if best[0] < 1:  # a free spot at this distance: nearer ones were tried first
                break
        _, offset, ha, va, radius, box = best
        leader = {"arrowprops": {"arrowstyle": "-", "color": "0.45", "linewidth": 0.6, "shrinkA": 0, "shrinkB": marker[k] / pixels}}
        annotation = ax.annotate(label, ax.transData.inverted().transform((px, py)), xytext=offset, textcoords="offset points",
                                 ha=ha, va=va, fontsize=fontsize, fontweight=weight, **(leader if radius > radii[1] else {}))
        annotation.set_in_layout(False)  # the layout is final: a label must not move the axes it was placed in
        taken.append(box)
        annotations.append(annotation)
    return annotations


def _plain_log_ticks(axis):
    """Tick labels 0.02, 0.05, 0.1, ... on a log axis, not 2x10^-2 (minor labels at 2 and 5 of each decade)."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def dot_plot(ax, values, upper=None, *, value_label: str, category_label: str, log: bool = False,
             horizontal: bool = False, markers: str = "osD^v"):
    """Quantities as points: one position per category (the index of `values`), one marker per column of a DataFrame;
    `upper` (same shape, NaN for none) draws a line from each point to it (e.g. p50 to p90). A point's position reads
    right on a log axis, where a bar's length does not."""
    import pandas as pd

    values = values.to_frame() if isinstance(values, pd.Series) else values
    if isinstance(upper, pd.Series):  # one column: its upper ends, whatever the Series is called
        upper = upper.to_frame(values.columns[0])
    positions = np.arange(len(values))
    step = 0.8 / max(1, values.shape[1])
    for k, column in enumerate(values.columns):
        where = positions + (k - (values.shape[1] - 1) / 2) * step
        v = values[column].astype(float).to_numpy()
        colour = f"C{k}"
        if upper is not None and column in upper:
            u = upper[column].astype(float).to_numpy()
            for p, a, b in zip(where, v, u):
                if np.isfinite(b):
                    (ax.plot([a, b], [p, p]) if horizontal else ax.plot([p, p], [a, b]))[0].set(color=colour, linewidth=1.5, label="_")
        xy = (v, where) if horizontal else (where, v)
        ax.plot(*xy, linestyle="none", marker=markers[k % len(markers)], markersize=7, color=colour,
                label=str(column) if values.shape[1] > 1 else "_")
    value_axis, category_axis = (ax.xaxis, ax.yaxis) if horizontal else (ax.yaxis, ax.xaxis)
    if log:
        (ax.set_xscale if horizontal else ax.set_yscale)("log")
        _plain_log_ticks(value_axis)
    (ax.set_yticks if horizontal else ax.set_xticks)(positions, [str(i) for i in values.index])
    (ax.set_ylim if horizontal else ax.set_xlim)(-0.6, len(values) - 0.4)
    if horizontal:
        ax.invert_yaxis()  # the first row on top, as in a table
    value_axis.label.set_text(value_label)
    category_axis.label.set_text(category_label)
    ax.grid(axis="x" if horizontal else "y", which="both", alpha=0.3)
    return ax


def stacked_bars(frame, *, value_label: str, category_label: str, title: str = "", legend_title: str | None = None):
    """Horizontal stacked bars, one per row of `frame` (first row on top), one segment per column, on a linear axis from
    zero to past the longest bar; the legend outside the axes, so it covers no bar."""
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.45 * len(frame)))
    left = np.zeros(len(frame))
    for column in frame.columns:
        ax.barh(np.arange(len(frame)), frame[column].astype(float), left=left, label=str(column))
        left += frame[column].astype(float).to_numpy()
    ax.set_yticks(np.arange(len(frame)), [str(i) for i in frame.index], fontsize=8)
    ax.set_xlim(0, 1.05 * left.max())
    ax.set_ylim(len(frame) - 0.5, -0.5)
    ax.set(xlabel=value_label, ylabel=category_label, title=title)
    ax.legend(fontsize=7, title=legend_title, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return check(fig)


def verdict(measured: float, target: str) -> str:
    """Whether `measured` meets `target` (">= 0.7", "<= 50"; "" for none), in words for a published table: "met", or
    "not met" and by how much, never a bare True/False."""
    if not str(target).strip():
        return "no target (for reference)"
    sign, bound = str(target).split()
    bound, measured = float(bound), float(measured)
    if sign not in (">=", "<="):
        raise ValueError(f"a target is '>= number' or '<= number', not {target!r}")
    if (measured >= bound) if sign == ">=" else (measured <= bound):
        return "met"
    side = "below" if sign == ">=" else "above"
    by = f"{abs(measured - bound) / abs(bound):.0%}" if bound else f"{abs(measured - bound):.3g}"
    return f"not met: {by} {side} the target"


# ------------------------------------------------------------------------------------------------- the shared figures

def show_digits(images: np.ndarray, labels, title: str | None = None, ncols: int = 10):
    """A grid of 28x28 digits with their labels."""
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 0.9, nrows * 1.1))
    for ax, image, label in zip(np.ravel(axes), images, labels):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(str(label), fontsize=9)
    for ax in np.ravel(axes):
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return check(fig)


def confusion_matrix(matrix: np.ndarray, labels=None, title: str = "Confusion matrix", ax=None):
    """Heat map of counts, rows = true class, columns = predicted class, each cell annotated, with its colour bar."""
    ax = ax or plt.subplots(figsize=(4 + 0.3 * len(matrix), 3.5 + 0.3 * len(matrix)))[1]
    image = ax.imshow(matrix, cmap="Blues")
    colour_bar = ax.figure.colorbar(image, ax=ax, label="images", shrink=0.8, ticks=MaxNLocator(integer=True))
    labels = labels if labels is not None else range(len(matrix))
    ax.set_xticks(range(len(matrix)), labels)
    ax.set_yticks(range(len(matrix)), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black",
                fontsize=10 if len(matrix) <= 5 else 8 if matrix.max() < 1000 else 7)
    ax.set_title(title)
    check(ax.figure, [ax, colour_bar.ax])
    return ax


def loss_contours(f, paths: dict[str, np.ndarray], lim: float = 3.0, ax=None, title: str = ""):
    """Contours of a 2-parameter loss `f` (taking a (2, H, W) grid) with optimiser paths drawn on top."""
    ax = ax or plt.subplots(figsize=(7, 7))[1]
    grid = np.mgrid[-lim:lim:200j, -lim:lim:200j]
    contours = ax.contour(grid[0], grid[1], f(grid), levels=np.geomspace(0.05, f(grid).max(), 12), cmap="viridis", alpha=0.6, linewidths=0.8)
    colour_bar = ax.figure.colorbar(contours, ax=ax, label="loss (contour levels, log-spaced)", shrink=0.8, format="%.2g")
    for name, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], ".-", markersize=3, linewidth=1.2, label=f"{name} ({len(path) - 1} steps)")
    ax.plot(0, 0, "k*", markersize=12, label="minimum")
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.set_aspect("equal")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)  # below the axes, over no path
    ax.set_title(title)
    ax.figure.tight_layout()
    check(ax.figure, [ax, colour_bar.ax])
    return ax


def runtime_comparison(results, batch_size: int):
    """Three panels from a `helpers.bench.compare` table: file size and batch throughput as bars from zero, single-image
    latency as points on a log axis (p50, with a line to p90), where ratios of many times are read by position."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.5 * len(results) + 2.2), sharey=True)
    rows = np.arange(len(results))
    axes[0].barh(rows, results["size (kB)"].astype(float))
    axes[0].set(xlabel="file size (kB)", title="File size")
    dot_plot(axes[1], results["p50_ms"].astype(float), results["p90_ms"].astype(float), horizontal=True, log=True,
             value_label="single-image latency (ms, log scale): p50, line to p90", category_label="")
    axes[1].set_title("One image")
    axes[2].barh(rows, results["samples_per_s"].astype(float))
    axes[2].set(xlabel=f"throughput, batches of {batch_size} (images/s)", title="Batches")
    axes[2].xaxis.set_major_formatter(EngFormatter())  # 120k, not 120000 run together with its neighbour
    axes[0].set_yticks(rows, list(results.index))
    axes[0].set_ylabel("runtime (file)")
    axes[0].set_ylim(len(results) - 0.5, -0.5)  # the first row on top, as in the table
    for ax in (axes[0], axes[2]):
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return check(fig)


def tradeoff(table, front, n: int, accuracy="accuracy", latency="p50_ms", size="size (kB)", group="runtime", window_points=0.5):
    """Accuracy against single-image latency, one numbered point per variant with its test-set noise (2 binomial standard
    errors on `n` images) as an error bar, marker area proportional to the file size, coloured by `group`; the key under
    the plot names the numbers (a name beside each point would not fit where the variants crowd). Members of the Pareto
    front (a boolean mask) are ringed and named in bold, and joined by a dashed line when two or more are shown. The y
    axis shows the variants within `window_points` of the most accurate, on a range at least four times the noise; the
    ones below are listed under the plot, not squeezed in."""
    from matplotlib.lines import Line2D

    table = table.assign(_front=np.asarray(front, bool))
    y_all = 100 * table[accuracy].astype(float)
    shown = table[y_all >= y_all.max() - window_points].sort_values(latency)
    x, y = shown[latency].astype(float).to_numpy(), 100 * shown[accuracy].astype(float).to_numpy()
    noise = 100 * binomial_noise(shown[accuracy].astype(float).to_numpy(), n)
    on_front = shown["_front"].to_numpy()
    fig, ax = plt.subplots(figsize=(12, 7 + 0.06 * len(shown)))
    ax.errorbar(x, y, yerr=noise, fmt="none", ecolor="0.6", elinewidth=0.8, capsize=2, zorder=1,
                label=f"2 standard errors of the accuracy ({n:,} test images)")
    largest = table[size].astype(float).max()
    areas = 30 + 900 * shown[size].astype(float).to_numpy() / largest  # points^2
    colours = {name: f"C{i}" for i, name in enumerate(shown[group].unique())}
    for name, colour in colours.items():
        rows = (shown[group] == name).to_numpy()
        ax.scatter(x[rows], y[rows], s=areas[rows], alpha=0.5, color=colour, edgecolor="black", linewidth=0.5, label=name, zorder=2)
    ax.scatter(x[on_front], y[on_front], s=areas[on_front] + 60, facecolor="none", edgecolor="black", linewidth=1.4, zorder=3,
               label=f"on the Pareto front (bold in the key): {on_front.sum()} of {int(table['_front'].sum())} shown")
    if on_front.sum() >= 2:
        front_line(ax, x[on_front], y[on_front], label="Pareto front", zorder=2)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlim(x.min() / 1.5, x.max() * 1.5)
    ax.set_xlabel("single-image latency p50 (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs latency (marker area ~ file size)")
    noise_axis(ax, y, float(noise.max()), f"2 standard errors on {n:,} images", unit=" points")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), markerscale=0.5)
    hidden = table.drop(shown.index)
    note = None
    if len(hidden):
        note = fig.text(0.01, 0.005, textwrap.fill("below the window: " + ", ".join(
            f"{name} ({100 * float(a):.2f} %{', on the front' if f else ''})"
            for name, a, f in zip(hidden.index, hidden[accuracy], hidden["_front"])), 170), fontsize=8, va="bottom")
    numbers = [str(k + 1) for k in range(len(shown))]
    key = fig.legend([Line2D([], [], linestyle="none")] * len(shown),
                     [f"{k}  {name}  ({a:.2f} %, {t:.3g} ms)" for k, name, a, t in zip(numbers, shown.index, y, x)],
                     loc="lower left", ncol=3, fontsize=8, handlelength=0, handletextpad=0, frameon=False,
                     title="the variants, by p50 latency (accuracy, p50)", title_fontsize=8)
    for text, bold in zip(key.get_texts(), on_front):
        text.set_fontweight("bold" if bold else "normal")
    renderer = _renderer(fig)
    below = (note.get_window_extent(renderer).height + 6) / fig.bbox.height if note else 0.0
    key.set_bbox_to_anchor((0.01, below), transform=fig.transFigure)  # the key above the note, under the axes
    fig.tight_layout(rect=(0, below + key.get_window_extent(renderer).height / fig.bbox.height, 1, 1))
    annotate_apart(ax, x, y, numbers, fontsize=8, weights=["bold" if f else "normal" for f in on_front],
                   marker_radii=np.sqrt(areas / np.pi))
    return check(fig)


def dashboard(frame, panels: dict, events: dict | None = None, thresholds: dict | None = None, title: str = ""):
    """Stacked time series sharing one x axis, as a monitoring dashboard shows them: `panels` maps an axis label to
    the column(s) of `frame` (indexed by seconds) drawn on it; `events` maps a label to a time, drawn as a vertical
    line on every panel; `thresholds` maps an axis label to a horizontal alert line. Legends sit right of the panels,
    where they cover no data."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.7 * len(panels)), sharex=True)
    axes = np.atleast_1d(axes)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (label, columns) in zip(axes, panels.items()):
        for column in [columns] if isinstance(columns, str) else columns:
            series = frame[column].dropna()  # sources sampled at different times leave gaps in the shared index
            ax.plot(series.index, series.values, lw=1.5, marker="." if len(series) < 80 else None, label=column)
        ax.set_ylabel("\n".join(textwrap.wrap(label, 18)), fontsize=8)
        if thresholds and label in thresholds:
            ax.axhline(thresholds[label], color="red", ls=":", lw=1, label=f"alert threshold ({thresholds[label]:g})")
        for i, (name, t) in enumerate((events or {}).items()):
            ax.axvline(t, color=colours[(i + 3) % len(colours)], ls="--", lw=1, label=name if ax is axes[0] else "_")
        ax.grid(alpha=0.3)
        if (ax is axes[0] and events) or not isinstance(columns, str) or (thresholds and label in thresholds):
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axes[-1].set_xlabel("seconds into the day")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return check(fig)


def rate_table(frame, title: str = "", vmax: float = 1.0, xlabel: str | None = None, ylabel: str | None = None,
               scale_label: str = "rate"):
    """A table of rates (rows x columns, values in [0, 1]) as an annotated heatmap, with its colour bar; the axis labels
    default to the names of the frame's columns and index."""
    fig, ax = plt.subplots(figsize=(2.6 + 1.25 * frame.shape[1], 1.3 + 0.42 * frame.shape[0]))
    image = ax.imshow(frame.to_numpy(float), cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, label=scale_label, format=PercentFormatter(1.0), fraction=0.04, pad=0.02)
    for (i, j), value in np.ndenumerate(frame.to_numpy(float)):
        ax.text(j, i, f"{value:.0%}", ha="center", va="center", color="white" if value < 0.6 * vmax else "black", fontsize=9)
    ax.set_xticks(range(frame.shape[1]), ["\n".join(textwrap.wrap(str(c), 14)) for c in frame.columns], fontsize=8)
    ax.set_yticks(range(frame.shape[0]), frame.index, fontsize=8)
    ax.set_xlabel(xlabel if xlabel is not None else str(frame.columns.name or ""), fontsize=9)
    ax.set_ylabel(ylabel if ylabel is not None else str(frame.index.name or ""), fontsize=9)
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    fig.tight_layout()
    return check(fig)
