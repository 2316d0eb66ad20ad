"""Chapter 13's attribution maps (helpers/attributions.py): saliency, integrated gradients and occlusion against the same
quantities computed by hand with torch.autograd and forward passes (and in closed form for a linear model), what
`attribute` refuses and that it leaves the model alone, and the checks of a map: completeness, the deletion curve on
a model that uses a known region only, and the parameter-randomisation cascade against scipy's Spearman correlation.
Tiny seeded models on random images: no MNIST, no training."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.stats import spearmanr

from helpers import attributions

RNG = np.random.default_rng(7)
X = RNG.random((5, 1, 28, 28), dtype=np.float32)
TARGETS = np.array([0, 3, 9, 3, 5])


def tiny_cnn(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 26 * 26, 10)).eval()


def linear(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10)).eval()


def weights_of(model, targets) -> np.ndarray:
    """The linear model's weights of each target class, as images: (N, 1, 28, 28)."""
    return model[1].weight.detach().numpy()[targets].reshape(-1, 1, 28, 28)


def scores(model, x, targets) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).double().numpy()[np.arange(len(x)), targets]


def input_gradient(model, x: np.ndarray, targets) -> np.ndarray:
    """∂f_t/∂x for each image, by torch.autograd.grad (each output depends only on its own image)."""
    inputs = torch.tensor(x, requires_grad=True)
    output = model(inputs)[torch.arange(len(x)), torch.as_tensor(targets)].sum()
    return torch.autograd.grad(output, inputs)[0].numpy()


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- the model and the inputs


def test_prepare_sets_eval_mode_and_turns_off_parameter_gradients():
    model = tiny_cnn().train()
    assert attributions.prepare(model) is model
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("x, targets, words", [
    (X.astype(np.float64), TARGETS, "float32"),
    (X[:, 0], TARGETS, r"\(N, C, H, W\)"),
    (X[:0], TARGETS[:0], "non-empty"),
    (X.tolist(), TARGETS, "numpy array"),
    (X, TARGETS[:4], "5 integer class indices"),
    (X, TARGETS.astype(float), "integer class indices"),
    (X, np.array([0, 3, 10, 3, 5]), r"class indices in \[0, 10\)"),
    (X, np.array([0, -1, 9, 3, 5]), r"class indices in \[0, 10\)"),
])
def test_attribute_refuses_wrong_images_and_targets_saying_what_is_wrong(x, targets, words):
    with pytest.raises(ValueError, match=words):
        attributions.attribute(tiny_cnn(), x, targets, "saliency")


def test_attribute_refuses_a_model_in_training_mode_and_an_unknown_method():
    model = tiny_cnn().train()
    for method in attributions.METHODS:
        with pytest.raises(ValueError, match="training mode"):
            attributions.attribute(model, X, TARGETS, method)
    with pytest.raises(ValueError, match="training mode"):
        attributions.integrated_gradients_with_delta(model, X, TARGETS)
    with pytest.raises(ValueError, match="unknown attribution method 'lime'"):
        attributions.attribute(model.eval(), X, TARGETS, "lime")


def test_attribute_leaves_no_gradient_and_the_model_and_images_unchanged():
    model = tiny_cnn()  # in eval mode, but not prepared: its parameters still require gradients
    before = copy.deepcopy(model)
    x = X.copy()
    x.setflags(write=False)  # a read-only array is fine
    for method in attributions.METHODS:
        maps = attributions.attribute(model, x, TARGETS, method, steps=4)
        assert maps.shape == X.shape and maps.dtype == np.float32 and np.abs(maps).sum() > 0
    attributions.integrated_gradients_with_delta(model, x, TARGETS, steps=4)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert same_weights(model, before) and not model.training and np.array_equal(x, X)
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


# --------------------------------------------------------------------------- the three methods


def test_saliency_is_the_absolute_input_gradient_of_the_class_score():
    model = tiny_cnn()
    expected = np.abs(input_gradient(model, X, TARGETS))
    np.testing.assert_allclose(attributions.attribute(model, X, TARGETS, "saliency"), expected, rtol=1e-6, atol=1e-8)
    # in passes of 2 images, the same maps
    np.testing.assert_allclose(attributions.attribute(model, X, TARGETS, "saliency", internal_batch_size=2), expected,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("steps, baseline, internal_batch_size", [(8, 0.0, None), (16, 0.5, None), (8, 0.0, 11)])
def test_integrated_gradients_is_the_midpoint_riemann_sum_written_by_hand(steps, baseline, internal_batch_size):
    model = tiny_cnn()
    total = np.zeros_like(X, dtype=np.float64)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        total += input_gradient(model, baseline + alpha * (X - baseline), TARGETS) / steps
    expected = (X - baseline) * total
    got = attributions.attribute(model, X, TARGETS, "integrated_gradients", steps=steps, baseline=baseline,
                                 internal_batch_size=internal_batch_size)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_integrated_gradients_of_a_linear_model_is_exact_and_complete():
    model = linear()
    maps = attributions.attribute(model, X, TARGETS, "integrated_gradients", steps=4)
    np.testing.assert_allclose(maps, X * weights_of(model, TARGETS), rtol=1e-5, atol=1e-7)  # (x − 0) · w_t
    assert attributions.completeness_gap(model, X, TARGETS, maps).max() < 1e-4


def test_completeness_gap_of_saliency_on_a_linear_model_is_its_closed_form():
    model = linear()
    maps = attributions.attribute(model, X, TARGETS, "saliency")
    np.testing.assert_allclose(maps, np.abs(weights_of(model, TARGETS)), rtol=1e-6)
    change = scores(model, X, TARGETS) - scores(model, np.zeros_like(X), TARGETS)  # w·x
    expected = np.abs(np.abs(weights_of(model, TARGETS)).reshape(5, -1).sum(1) - change) / np.abs(change)
    np.testing.assert_allclose(attributions.completeness_gap(model, X, TARGETS, maps), expected, rtol=1e-4)


def test_ig_deltas_are_the_sum_of_the_map_minus_the_change_in_score():
    model = tiny_cnn()
    maps, deltas = attributions.integrated_gradients_with_delta(model, X, TARGETS, steps=8, baseline=0.25)
    assert deltas.shape == (5,) and deltas.dtype == np.float32
    np.testing.assert_allclose(maps, attributions.attribute(model, X, TARGETS, "integrated_gradients", steps=8,
                                                            baseline=0.25), rtol=1e-6, atol=1e-8)
    change = scores(model, X, TARGETS) - scores(model, np.full_like(X, 0.25), TARGETS)
    np.testing.assert_allclose(deltas, maps.reshape(5, -1).astype(np.float64).sum(1) - change, atol=2e-4)
    gaps = attributions.completeness_gap(model, X, TARGETS, maps, baseline=0.25)
    np.testing.assert_allclose(gaps, np.abs(deltas) / np.abs(change), rtol=1e-2, atol=1e-5)


def test_occlusion_of_a_linear_model_with_window_equal_to_stride_is_each_patchs_drop_in_score():
    model = linear()
    maps = attributions.attribute(model, X, TARGETS, "occlusion", window=4, stride=4)
    contributions = X * weights_of(model, TARGETS)  # w·x, pixel by pixel
    patches = contributions.reshape(5, 1, 7, 4, 7, 4).sum(axis=(3, 5), keepdims=True)  # Σ w·x over each 4×4 patch
    expected = np.broadcast_to(patches, (5, 1, 7, 4, 7, 4)).reshape(X.shape)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)


def test_occlusion_with_overlapping_windows_is_the_mean_drop_over_the_patches_covering_each_pixel():
    model, window, stride, baseline = tiny_cnn(), 4, 2, 0.5
    full = scores(model, X, TARGETS)
    total, count = np.zeros(X.shape), np.zeros(X.shape)
    for top in range(0, 28 - window + 1, stride):
        for left in range(0, 28 - window + 1, stride):
            occluded = X.copy()
            occluded[:, :, top : top + window, left : left + window] = baseline
            drop = full - scores(model, occluded, TARGETS)
            total[:, :, top : top + window, left : left + window] += drop[:, None, None, None]
            count[:, :, top : top + window, left : left + window] += 1
    maps = attributions.attribute(model, X, TARGETS, "occlusion", window=window, stride=stride, baseline=baseline)
    np.testing.assert_allclose(maps, total / count, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attributions.attribute(model, X, TARGETS, "occlusion", window=window, stride=stride,
                                                      baseline=baseline, internal_batch_size=7), maps, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- deletion


REGION = (slice(None), 0, slice(4, 8), slice(10, 14))  # the 16 pixels the region model looks at


def region_model():
    """Class 0's logit is the sum of REGION's pixels, class 1's a constant 4: on images in [0.5, 1] (a region sum of
    8 to 16) it answers 0 until most of REGION is deleted, and ignores every other pixel."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2)).eval()
    with torch.no_grad():
        weight = torch.zeros(2, 1, 28, 28)
        weight[0][REGION[1:]] = 1.0
        model[1].weight.copy_(weight.reshape(2, -1))
        model[1].bias.copy_(torch.tensor([0.0, 4.0]))
    return model


def test_deleting_the_pixels_a_map_ranks_first_beats_deleting_at_random_when_they_are_the_ones_used():
    model = region_model()
    x = (0.5 + 0.5 * RNG.random((200, 1, 28, 28))).astype(np.float32)
    y = np.zeros(200, int)
    fractions = [0.0, 0.02, 0.05, 0.1, 0.25, 1.0]
    maps = attributions.attribute(model, x, y, "saliency")  # 1 on REGION, 0 elsewhere
    assert (maps[REGION] == 1).all() and maps.sum() == 200 * 16
    ranked = attributions.deletion_curve(model, x, y, maps, fractions)
    random = attributions.deletion_curve(model, x, y, None, fractions)
    assert ranked.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # 2 % of 784 pixels is REGION's 16
    assert (random[:4] >= 0.95).all() and random[-1] == 0.0  # a random 10 % holds ~1.6 of REGION's pixels
    assert attributions.curve_area(fractions, ranked) < attributions.curve_area(fractions, random) - 0.5
    # ranked as signed values, highest first: the negated map deletes REGION last
    assert (attributions.deletion_curve(model, x, y, -maps, fractions)[:5] == 1.0).all()


def test_deletion_curve_refuses_a_training_model_and_maps_of_another_shape():
    model = region_model()
    with pytest.raises(ValueError, match="attributions must have the shape of x"):
        attributions.deletion_curve(model, X, np.zeros(5, int), X[:, :, :14], [0.0, 0.5])
    with pytest.raises(ValueError, match="training mode"):
        attributions.deletion_curve(model.train(), X, np.zeros(5, int), None, [0.0, 0.5])


def test_deletion_order_ranks_highest_first_and_breaks_ties_by_seed():
    shape = (3, 1, 4, 5)
    values = RNG.permutation(60).reshape(shape).astype(float)  # all distinct
    ranks = attributions.deletion_order(values, shape, seed=0)
    expected = np.argsort(np.argsort(-values.reshape(3, -1), axis=1), axis=1)
    assert np.array_equal(ranks, expected)
    tied = np.zeros(shape)
    tied[:, 0, 0, :3] = [3.0, 2.0, 1.0]  # 3 positive pixels per image, then 17 tied at 0
    ranks = attributions.deletion_order(tied, shape, seed=0)
    assert (ranks[:, :3] == [0, 1, 2]).all()
    assert all(sorted(row) == list(range(20)) for row in ranks)
    assert np.array_equal(ranks, attributions.deletion_order(tied, shape, seed=0))
    assert not np.array_equal(ranks, attributions.deletion_order(tied, shape, seed=1))
    assert np.array_equal(attributions.deletion_order(np.zeros(shape), shape, seed=4),
                          attributions.deletion_order(None, shape, seed=4))  # all tied: the random order


@pytest.mark.parametrize("constant", [0.0, 0.37, 1.0])
def test_curve_area_of_a_constant_curve_is_the_constant(constant):
    assert attributions.curve_area([0.0, 0.1, 0.3, 0.8], [constant] * 4) == pytest.approx(constant)


def test_curve_area_is_the_trapezoid_rule_over_the_span():
    fractions, values = np.array([0.1, 0.2, 0.5, 0.9]), np.array([1.0, 0.4, 0.3, 0.0])
    assert attributions.curve_area(fractions, values) == pytest.approx(trapezoid(values, fractions) / 0.8)
    assert attributions.curve_area([0, 1], [1, 0]) == pytest.approx(0.5)


# --------------------------------------------------------------------------- randomisation


def test_randomised_copies_cascade_from_the_top_layer_leaving_the_model_untouched():
    model = tiny_cnn()
    before, state = copy.deepcopy(model), torch.get_rng_state()
    copies = attributions.randomised_copies(model, seed=3)
    assert [name for name, _ in copies] == ["3 Linear", "0 Conv2d"]
    (_, top), (_, both) = copies
    assert same_weights(model, before) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(top[3].weight, model[3].weight) and torch.equal(top[0].weight, model[0].weight)
    assert torch.equal(both[3].weight, top[3].weight) and not torch.equal(both[0].weight, model[0].weight)
    # each layer re-initialised by its own reset_parameters, seeded seed + position
    torch.manual_seed(3)
    assert torch.equal(top[3].weight, torch.nn.Linear(4 * 26 * 26, 10).weight)
    torch.manual_seed(4)
    assert torch.equal(both[0].bias, torch.nn.Conv2d(1, 4, 3).bias)
    again, other = attributions.randomised_copies(model, seed=3), attributions.randomised_copies(model, seed=5)
    assert all(same_weights(a, b) for (_, a), (_, b) in zip(copies, again))
    assert not any(same_weights(a, b) for (_, a), (_, b) in zip(copies, other))


def test_rank_correlations_are_scipys_spearman_per_row_with_ties():
    a = RNG.normal(size=(6, 1, 5, 5))
    b = np.round(a + RNG.normal(size=a.shape), 0)  # many ties
    expected = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(6)]
    np.testing.assert_allclose(attributions.rank_correlations(a, b), expected, rtol=1e-10)
    constant = attributions.rank_correlations(np.ones((1, 9)), RNG.normal(size=(1, 9)))
    assert np.isnan(constant).all()


def test_rank_correlations_where_keeps_each_examples_own_pixels():
    a = RNG.normal(size=(4, 1, 5, 5))
    b = a + RNG.normal(size=a.shape)
    where = RNG.random(a.shape) < 0.5
    where[3] = False
    where[3, 0, 0, 0] = True  # one pixel: no correlation to speak of
    expected = [spearmanr(a[i][where[i]], b[i][where[i]]).statistic for i in range(3)]
    got = attributions.rank_correlations(a, b, where)
    np.testing.assert_allclose(got[:3], expected, rtol=1e-10)
    assert np.isnan(got[3])
    # shared zeros agree: on every pixel the correlation is higher than on the rest alone
    a0, b0 = np.where(where, 0.0, np.abs(a)), np.where(where, 0.0, np.abs(b))
    assert (attributions.rank_correlations(a0, b0)[:3] > attributions.rank_correlations(a0, b0, ~where)[:3]).all()


def test_randomisation_check_compares_each_cascade_step_with_the_trained_maps():
    model, targets = tiny_cnn(), TARGETS[:3]
    x = np.where(X[:3] > 0.5, X[:3], 0.0).astype(np.float32)  # black pixels, as in a digit
    frame = attributions.randomisation_check(model, x, targets, seed=2, steps=4)
    assert list(frame.columns) == ["method", "layers", "randomised", "spearman", "spearman_signed", "spearman_strokes"]
    assert frame["method"].tolist() == [m for m in attributions.METHODS for _ in range(3)]
    assert frame["layers"].tolist() == [0, 1, 2] * 3
    assert frame["randomised"].tolist() == ["none", "3 Linear", "3 Linear + 0 Conv2d"] * 3
    first = frame[frame["layers"] == 0]
    assert (first["spearman"] == 1.0).all() and (first["spearman_signed"] == 1.0).all()
    # one row again, by hand: saliency with every layer random
    _, randomised = attributions.randomised_copies(model, seed=2)[-1]
    trained, random = (attributions.attribute(m, x, targets, "saliency") for m in (model, randomised))
    expected = np.mean([spearmanr(np.abs(trained[i]).ravel(), np.abs(random[i]).ravel()).statistic for i in range(3)])
    row = frame[(frame["method"] == "saliency") & (frame["layers"] == 2)].iloc[0]
    assert row["spearman"] == pytest.approx(expected, rel=1e-6) and row["spearman"] < 0.9
    strokes = x != 0
    expected = np.mean([spearmanr(np.abs(trained[i])[strokes[i]], np.abs(random[i])[strokes[i]]).statistic
                        for i in range(3)])
    assert row["spearman_strokes"] == pytest.approx(expected, rel=1e-6) and row["spearman_strokes"] != row["spearman"]


def test_passes_judges_each_method_by_its_fully_randomised_row():
    frame = pd.DataFrame({"method": ["a", "a", "a", "b", "b", "b", "c", "c"],
                          "layers": [0, 1, 2, 0, 1, 2, 0, 1],
                          "spearman": [1.0, 0.9, 0.1, 1.0, 0.1, 0.7, 1.0, 0.49]})
    verdict = attributions.passes(frame, threshold=0.5)
    assert verdict.to_dict() == {"a": True, "b": False, "c": True}
    assert attributions.passes(frame, threshold=0.1).to_dict() == {"a": False, "b": False, "c": False}
    frame["other"] = [1.0, 1.0, 0.9, 1.0, 1.0, 0.2, 1.0, 0.8]
    assert attributions.passes(frame, 0.5, column="other").to_dict() == {"a": False, "b": True, "c": False}
