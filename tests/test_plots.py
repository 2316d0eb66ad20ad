"""The figure rules of docs/contributing.md ("Figures"), as helpers.plots checks them: each check fails on a figure that
breaks its rule and passes on one that keeps it."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import bench, plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def labelled(ax, x="value (ms)", y="runtime"):
    ax.set(xlabel=x, ylabel=y)
    return ax


def found(fig, words):
    return [p for p in plots.problems(fig) if words in p]


TIMES = pd.Series({"fast": 0.02, "middle": 0.3, "slow": 4.0}, name="p50_ms")


def test_bars_on_a_log_axis_are_refused_and_points_pass():
    fig, ax = plt.subplots()
    labelled(ax).barh(range(3), TIMES)
    ax.set_xscale("log")
    assert found(fig, "bars on a log x axis")
    with pytest.raises(plots.FigureError, match="bars on a log"):
        plots.check(fig)
    fig, ax = plt.subplots(figsize=(6, 2.5))
    plots.dot_plot(ax, TIMES, TIMES * 1.5, value_label="latency (ms, log scale)", category_label="runtime", log=True, horizontal=True)
    fig.tight_layout()
    assert plots.problems(fig) == []
    assert ax.get_xscale() == "log" and not ax.containers  # points and lines, no bars


def test_a_truncated_or_clipped_bar_is_refused():
    fig, ax = plt.subplots()
    labelled(ax).barh(range(3), [5.0, 6.0, 9.0])
    ax.set_xlim(4, 10)  # the bars' base, zero, is cut off: 5 and 9 look 1:5, not 5:9
    assert found(fig, "starts below")
    ax.set_xlim(0, 8)  # the longest bar runs off the axis
    assert found(fig, "is clipped")
    ax.set_xlim(0, 10)
    assert not found(fig, "bar")


def test_stacked_bars_keep_the_longest_bar_and_the_legend_clear():
    split = pd.DataFrame({"proxy": [0.4, 0.2, 0.1], "replica": [0.5, 2.5, 0.3], "controller": [0.0, 0.05, 0.01]},
                         index=["1 replica", "2 replicas", "batched"])
    fig = plots.stacked_bars(split, value_label="CPU ms per request", category_label="configuration")
    ax = fig.axes[0]
    assert ax.get_xlim()[1] >= split.sum(axis=1).max() and plots.problems(fig) == []


def test_every_axis_with_tick_labels_needs_a_label():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.9, 0.95, 0.97])
    ax.set_xlabel("epoch")
    assert found(fig, "the y axis has tick labels but no label")
    ax.set_ylabel("test accuracy")
    assert plots.problems(fig) == []
    # panels sharing an axis: the ones whose tick labels are hidden need no label of their own
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(8, 3))
    for ax in axes:
        ax.plot([1, 2], [1, 2])
        ax.set_xlabel("step")
    axes[0].set_ylabel("loss")
    fig.tight_layout()
    assert plots.problems(fig) == []


def test_a_colour_scale_needs_a_colour_bar():
    fig, ax = plt.subplots()
    image = labelled(ax, "predicted class", "true class").imshow(np.arange(9).reshape(3, 3))
    assert found(fig, "colour bar")
    fig.colorbar(image, ax=ax, label="images")
    assert plots.problems(fig) == []
    frame = pd.DataFrame([[0.1, 0.9], [0.5, 1.0]], index=["noise", "dimming"], columns=["KS", "MMD"])
    fig = plots.rate_table(frame, "Detection rate", xlabel="detector", ylabel="shift", scale_label="detection rate")
    assert any(hasattr(a, "_colorbar") for a in fig.axes)


def test_a_front_needs_two_points():
    fig, ax = plt.subplots()
    labelled(ax).plot([0.02], [98.6], "k--", label="Pareto front")
    assert found(fig, "a front needs two points")
    with pytest.raises(plots.FigureError, match="not a line"):
        plots.front_line(ax, [0.02], [98.6])
    fig, ax = plt.subplots()
    plots.front_line(labelled(ax), [0.02, 0.01], [98.6, 98.4])
    assert plots.problems(fig) == []


def test_the_tradeoff_plot_draws_no_front_line_through_one_point():
    table = pd.DataFrame({"accuracy": [0.986, 0.985, 0.984], "p50_ms": [0.01, 0.02, 0.03], "size (kB)": [60, 200, 90],
                          "runtime": ["a", "b", "b"]}, index=["fast and best", "slow", "slower"])
    front = bench.pareto_front(table["accuracy"], table["p50_ms"])
    assert front.tolist() == [True, False, False]
    fig = plots.tradeoff(table, front, n=10_000)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert "Pareto front" not in labels and plots.problems(fig) == []
    assert any("1 of 1 shown" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_overlapping_texts_are_found():
    fig, ax = plt.subplots()
    labelled(ax)
    ax.text(0.5, 0.5, "ONNX Runtime int8")
    ax.text(0.5, 0.5, "ExecuTorch int8")
    assert found(fig, "overlaps")
    # three panels too close for their y labels: each label runs into the panel to its left (chapter 02's bug)
    fig, axes = plt.subplots(1, 3, figsize=(7, 2.5))
    for ax in axes:
        ax.plot([1, 2], [0.001, 0.003])
        ax.set(xlabel="epoch", ylabel="learning rate (end of epoch)")
    assert found(fig, "axes 1 y label runs into axes 0") and found(fig, "axes 2 y label runs into axes 1")
    fig.set_layout_engine("constrained")
    fig.set_size_inches(12, 3)
    assert plots.problems(fig) == []


def test_annotate_apart_places_crowded_labels_without_overlap():
    rng = np.random.default_rng(0)
    x, y = np.exp(rng.uniform(-4, -1, 14)), rng.normal(98.6, 0.1, 14)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(x, y, s=200)
    labelled(ax, "latency (ms, log scale)", "test accuracy (%)").set_xscale("log")
    ax.margins(0.25)
    fig.tight_layout()
    names = [f"variant number {k}" for k in range(14)]
    # the same labels all at one offset overlap ...
    for xi, yi, name in zip(x, y, names):
        ax.annotate(name, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=7)
    assert found(fig, "overlaps")
    for text in list(ax.texts):
        text.remove()
    # ... placed apart they do not
    plots.annotate_apart(ax, x, y, names, marker_radii=np.sqrt(200 / np.pi))
    assert plots.problems(fig) == []


def test_a_legend_over_the_data_is_found():
    fig, ax = plt.subplots(figsize=(6, 3))
    t = np.linspace(0, 100, 200)
    labelled(ax, "seconds into the day", "requests / s").plot(t, np.minimum(t, 20) * 10, label="requests per second")
    ax.axvline(50, ls="--", label="drift onset")
    ax.legend(loc="upper left")  # over the ramp-up
    assert found(fig, "the legend covers data")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    assert plots.problems(fig) == []


def test_an_axis_narrower_than_the_noise_says_so():
    noise = 100 * float(plots.binomial_noise(0.986, 10_000))
    assert noise == pytest.approx(200 * np.sqrt(0.986 * 0.014 / 10_000))
    fig, ax = plt.subplots()
    assert plots.noise_axis(ax, [98.60, 98.65, 98.70], noise, "2 standard errors on 10,000 images")  # 0.1 points apart
    low, high = ax.get_ylim()
    assert high - low >= 4 * noise - 1e-9 and any("less than the noise" in t.get_text() for t in ax.texts)
    fig, ax = plt.subplots()
    assert not plots.noise_axis(ax, [97.0, 98.5, 99.0], noise, "2 standard errors on 10,000 images")
    assert not ax.texts


def test_a_target_reads_met_or_by_how_much_it_was_missed():
    assert plots.verdict(0.8, ">= 0.70") == "met"
    assert plots.verdict(0.63, ">= 0.70") == "not met: 10% below the target"
    assert plots.verdict(62.5, "<= 50") == "not met: 25% above the target"
    assert plots.verdict(1.5, "<= 0") == "not met: 1.5 above the target"
    assert plots.verdict(0.4, "") == "no target (for reference)"
    assert all(not isinstance(plots.verdict(m, ">= 1"), bool) for m in (0, 2))
