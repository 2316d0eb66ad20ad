"""Figures the chapters share, so every notebook draws them the same way."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import EngFormatter


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
    return fig


def confusion_matrix(matrix: np.ndarray, labels=None, title: str = "Confusion matrix", ax=None):
    """Heat map of counts, rows = true class, columns = predicted class, each cell annotated."""
    ax = ax or plt.subplots(figsize=(4 + 0.3 * len(matrix), 3.5 + 0.3 * len(matrix)))[1]
    ax.imshow(matrix, cmap="Blues")
    labels = labels if labels is not None else range(len(matrix))
    ax.set_xticks(range(len(matrix)), labels)
    ax.set_yticks(range(len(matrix)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    ax.set_title(title)
    return ax


def loss_contours(f, paths: dict[str, np.ndarray], lim: float = 3.0, ax=None, title: str = ""):
    """Contours of a 2-parameter loss `f` (taking a (2, H, W) grid) with optimiser paths drawn on top."""
    ax = ax or plt.subplots(figsize=(6, 5.5))[1]
    grid = np.mgrid[-lim:lim:200j, -lim:lim:200j]
    ax.contour(grid[0], grid[1], f(grid), levels=np.geomspace(0.05, f(grid).max(), 12), cmap="viridis", alpha=0.5, linewidths=0.8)
    for name, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], ".-", markersize=3, linewidth=1.2, label=f"{name} ({len(path) - 1} steps)")
    ax.plot(0, 0, "k*", markersize=12, label="minimum")
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return ax


def runtime_comparison(results, batch_size: int):
    """Three bar charts from a `helpers.bench.compare` table: file size, p50 latency, batch throughput."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.5 * len(results) + 1.8))
    panels = [("size (kB)", "file size (kB)", False), ("p50_ms", "single-image latency p50 (ms, log scale)", True),
              ("samples_per_s", f"throughput, batch {batch_size} (images/s)", False)]
    for ax, (column, title, log) in zip(axes, panels):
        results[column].astype(float).plot.barh(ax=ax, title=title, logx=log)
    axes[2].xaxis.set_major_formatter(EngFormatter())  # 120k, not 120000 run together with its neighbour
    fig.tight_layout()
    return fig


def tradeoff(table, front, accuracy="accuracy", latency="p50_ms", size="size (kB)", group="runtime", window_points=0.5):
    """Accuracy against single-image latency, one labelled marker per variant, its area proportional to the file size,
    coloured by `group`; the Pareto front (a boolean mask) joined by a dashed line. The y axis shows the variants within
    `window_points` of the most accurate; the ones below are listed under the plot, not squeezed in."""
    from matplotlib.ticker import FuncFormatter

    table = table.assign(_front=np.asarray(front, bool))
    y_all = 100 * table[accuracy].astype(float)
    shown = table[y_all >= y_all.max() - window_points]
    fig, ax = plt.subplots(figsize=(12, 7))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    largest = table[size].astype(float).max()
    for i, (name, rows) in enumerate(shown.groupby(group, sort=False)):
        ax.scatter(rows[latency].astype(float), 100 * rows[accuracy].astype(float), s=30 + 900 * rows[size].astype(float) / largest,
                   alpha=0.5, color=colors[i % len(colors)], edgecolor="black", linewidth=0.5, label=name)
    for i, (label, row) in enumerate(shown.sort_values(latency).iterrows()):
        ax.annotate(label, (float(row[latency]), 100 * float(row[accuracy])), fontsize=7, xytext=(6, 6 if i % 2 else -10),
                    textcoords="offset points", fontweight="bold" if row["_front"] else "normal")
    best = shown[shown["_front"]].sort_values(latency)  # the front within the window; members below it are listed under the plot
    ax.plot(best[latency].astype(float), 100 * best[accuracy].astype(float), "k--", linewidth=1, label="Pareto front (bold labels)")
    y = 100 * shown[accuracy].astype(float)
    margin = max(0.05, 0.1 * (y.max() - y.min()))
    ax.set_ylim(y.min() - margin, y.max() + margin)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if f"{x:.0e}"[0] in "25" else ""))  # 0.02, 0.05, ...
    ax.set_xlabel("single-image latency p50 (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs latency (marker area ~ file size)")
    ax.legend(fontsize=8, loc="lower right", markerscale=0.4)
    hidden = table.drop(shown.index)
    if len(hidden):
        note = "below the window: " + ", ".join(f"{n} ({100 * float(a):.2f} %{', on the front' if f else ''})"
                                                 for n, a, f in zip(hidden.index, hidden[accuracy], hidden["_front"]))
        fig.text(0.01, 0.01, textwrap.fill(note, 180), fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.05 if len(hidden) else 0, 1, 1))
    return fig


def dashboard(frame, panels: dict, events: dict | None = None, thresholds: dict | None = None, title: str = ""):
    """Stacked time series sharing one x axis, as a monitoring dashboard shows them: `panels` maps an axis label to
    the column(s) of `frame` (indexed by seconds) drawn on it; `events` maps a label to a time, drawn as a vertical
    line on every panel; `thresholds` maps an axis label to a horizontal alert line."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.6 * len(panels)), sharex=True)
    axes = np.atleast_1d(axes)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (label, columns) in zip(axes, panels.items()):
        for column in [columns] if isinstance(columns, str) else columns:
            series = frame[column].dropna()  # sources sampled at different times leave gaps in the shared index
            ax.plot(series.index, series.values, lw=1.5, marker="." if len(series) < 80 else None, label=column)
        ax.set_ylabel("\n".join(textwrap.wrap(label, 18)), fontsize=8)
        if thresholds and label in thresholds:
            ax.axhline(thresholds[label], color="red", ls=":", lw=1)
        for i, (name, t) in enumerate((events or {}).items()):
            ax.axvline(t, color=colours[(i + 3) % len(colours)], ls="--", lw=1, label=name if ax is axes[0] else "_")
        ax.grid(alpha=0.3)
        if (ax is axes[0] and events) or not isinstance(columns, str):
            ax.legend(fontsize=7, loc="upper left", ncol=3)
    axes[-1].set_xlabel("seconds into the day")
    if title:
        fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return fig


def rate_table(frame, title: str = "", vmax: float = 1.0):
    """A table of rates (rows x columns, values in [0, 1]) as an annotated heatmap."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.25 * frame.shape[1], 0.9 + 0.42 * frame.shape[0]))
    ax.imshow(frame.to_numpy(float), cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    for (i, j), value in np.ndenumerate(frame.to_numpy(float)):
        ax.text(j, i, f"{value:.0%}", ha="center", va="center", color="white" if value < 0.6 * vmax else "black", fontsize=9)
    ax.set_xticks(range(frame.shape[1]), ["\n".join(textwrap.wrap(str(c), 14)) for c in frame.columns], fontsize=8)
    ax.set_yticks(range(frame.shape[0]), frame.index, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
