"""Chapter 13's membership inference and DP-SGD (helpers/privacy.py): the attack scores against torch and the textbook
formulas, the ROC of an attack against sklearn-free brute force, who trains on what, LiRA against a per-example loop
with scipy's normal density, and seeded training of the small memorising models and of DP-SGD with Opacus (hooks
gone, ε as targeted). Synthetic images only, and a few epochs: no MNIST and no memorising here."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax
from scipy.stats import norm

from helpers import models, privacy, training

RNG = np.random.default_rng(13)


def random_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- attack scores


def test_loss_scores_are_minus_torchs_cross_entropy():
    z, y = RNG.normal(scale=5, size=(50, 10)), RNG.integers(0, 10, 50)
    expected = -F.cross_entropy(torch.tensor(z), torch.tensor(y), reduction="none").numpy()
    np.testing.assert_allclose(privacy.loss_scores(z, y), expected, rtol=1e-12, atol=1e-12)
    assert privacy.loss_scores(z, y).dtype == np.float64


def test_confidence_logit_is_the_log_odds_of_the_true_class_where_that_is_finite():
    z, y = RNG.normal(scale=3, size=(40, 10)), RNG.integers(0, 10, 40)
    p = softmax(z, axis=1)[np.arange(40), y]
    np.testing.assert_allclose(privacy.confidence_logit(z, y), np.log(p / (1 - p)), rtol=1e-9, atol=1e-9)


def test_confidence_logit_stays_finite_and_exact_for_huge_logit_gaps():
    z = np.array([[100.0, 0.0, 0.0], [1e4, -5.0, 3.0], [0.0, 1000.0, 0.0]])
    y = np.array([0, 0, 0])
    with np.errstate(divide="ignore"):
        p = softmax(z, axis=1)[np.arange(3), y]
        naive = np.log(p / (1 - p))
    assert np.isinf(naive[:2]).all()  # the textbook formula overflows here...
    phi = privacy.confidence_logit(z, y)  # ...the logits do not
    assert np.isfinite(phi).all()
    np.testing.assert_allclose(phi, [100 - math.log(2), 1e4 - (3 + math.log1p(math.exp(-8))), -1000.0], rtol=1e-12)


def test_correctness_scores_are_one_where_the_top_class_is_the_label():
    z = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    scores = privacy.correctness_scores(z, np.array([0, 2, 2, 1]))
    assert scores.tolist() == [1.0, 0.0, 1.0, 0.0] and scores.dtype == np.float64


@pytest.mark.parametrize("logits, labels", [(np.zeros((3, 10)), np.zeros(4)), (np.zeros(10), np.zeros(10)),
                                            (np.zeros((3, 10)), np.zeros((3, 1)))])
def test_scores_refuse_logits_and_labels_of_mismatched_shapes(logits, labels):
    for score in (privacy.loss_scores, privacy.confidence_logit, privacy.correctness_scores):
        with pytest.raises(ValueError, match="logits must be"):
            score(logits, labels)


# --------------------------------------------------------------------------- measuring an attack


def brute_force_roc(scores, is_member):
    """Every threshold an attacker can set (each distinct score, and above all): (FPR, TPR) of "member if ≥ t"."""
    thresholds = np.concatenate([[np.inf], np.unique(scores)])
    members, others = scores[is_member], scores[~is_member]
    return (np.array([(others >= t).mean() for t in thresholds]), np.array([(members >= t).mean() for t in thresholds]))


def test_attack_roc_auc_is_the_probability_a_member_outscores_a_nonmember():
    scores = RNG.integers(0, 20, 300).astype(float)  # with ties
    is_member = RNG.random(300) < 0.4
    members, others = scores[is_member], scores[~is_member]
    pairs = members[:, None] - others[None, :]
    expected = (pairs > 0).mean() + 0.5 * (pairs == 0).mean()  # Mann-Whitney, ties counting a half
    result = privacy.attack_roc(scores, is_member)
    assert result.auc == pytest.approx(expected, abs=1e-12)
    assert (result.n_members, result.n_nonmembers) == (is_member.sum(), (~is_member).sum())
    fpr, tpr = brute_force_roc(scores, is_member)
    assert result.tpr_at_1pct_fpr == pytest.approx(tpr[fpr <= 0.01].max())


@pytest.mark.parametrize("members_score, auc, tpr", [(10.0, 1.0, 1.0), (-10.0, 0.0, 0.0), (0.0, 0.5, 0.0)])
def test_attack_roc_on_known_cases_separated_reversed_and_tied(members_score, auc, tpr):
    is_member = np.arange(200) < 50
    scores = np.where(is_member, members_score, 0.0)
    result = privacy.attack_roc(scores, is_member)
    assert result.auc == pytest.approx(auc) and result.tpr_at_1pct_fpr == pytest.approx(tpr)


def test_tpr_at_1pct_fpr_takes_the_last_point_under_the_target_without_interpolating():
    others = np.arange(200.0)  # 200 non-members scored 0..199
    members = np.array([1000.0] * 5 + [196.5] * 5)  # half above every non-member, half above 3 of them (FPR 1.5 %)
    scores, is_member = np.concatenate([members, others]), np.arange(210) < 10
    assert privacy.attack_roc(scores, is_member).tpr_at_1pct_fpr == 0.5
    assert privacy.tpr_at_fpr(np.array([0, 0.005, 0.02, 1]), np.array([0, 0.3, 0.9, 1]), 0.01) == 0.3  # not 0.5
    assert privacy.tpr_at_fpr(np.array([0.1, 1]), np.array([0.5, 1]), 0.01) == 0.0  # no point under the target


@pytest.mark.parametrize("scores, is_member, words", [
    ([0.1, np.nan, 0.3, 0.4], [1, 0, 1, 0], "NaN or infinite"),
    ([0.1, np.inf, 0.3, 0.4], [1, 0, 1, 0], "NaN or infinite"),
    ([0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1], "both members and non-members"),
    ([0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0], "both members and non-members"),
    ([0.1, 0.2, 0.3], [1, 0, 1, 0], "same length"),
])
def test_attack_roc_refuses_unscored_examples_and_one_class_labels(scores, is_member, words):
    with pytest.raises(ValueError, match=words):
        privacy.attack_roc(np.array(scores), np.array(is_member, bool))


# --------------------------------------------------------------------------- who trains on what


def test_membership_split_has_exactly_n_members_and_is_seeded():
    mask = privacy.membership_split(1000, 300, seed=4)
    assert mask.dtype == bool and mask.shape == (1000,) and mask.sum() == 300
    assert np.array_equal(mask, privacy.membership_split(1000, 300, seed=4))
    assert not np.array_equal(mask, privacy.membership_split(1000, 300, seed=5))


@pytest.mark.parametrize("n_members", [0, 10, -1])
def test_membership_split_refuses_no_members_or_no_nonmembers(n_members):
    with pytest.raises(ValueError, match="n_members must be between 1 and n_pool - 1"):
        privacy.membership_split(10, n_members, seed=0)


def test_each_example_is_in_for_exactly_half_of_the_shadows_each_shadow_trains_on_about_half():
    assignment = privacy.shadow_assignment(1000, 8, seed=2)
    assert assignment.shape == (8, 1000) and assignment.dtype == bool
    assert (assignment.sum(axis=0) == 4).all()
    assert (np.abs(assignment.sum(axis=1) - 500) < 80).all()  # binomial(1000, 1/2): std 16
    assert len({tuple(column) for column in assignment.T}) > 30  # not one pattern for every example
    assert np.array_equal(assignment, privacy.shadow_assignment(1000, 8, seed=2))
    assert not np.array_equal(assignment, privacy.shadow_assignment(1000, 8, seed=3))


@pytest.mark.parametrize("n_shadows", [0, 1, 3, 7])
def test_shadow_assignment_refuses_an_odd_number_of_shadows(n_shadows):
    with pytest.raises(ValueError, match="even"):
        privacy.shadow_assignment(10, n_shadows, seed=0)


# --------------------------------------------------------------------------- LiRA


def brute_force_lira(target_phi, shadow_phi, shadow_in):
    """LiRA written out example by example: per-example means, one pooled within-example std per side."""
    k, n = shadow_phi.shape
    mu_in = [shadow_phi[shadow_in[:, i], i].mean() for i in range(n)]
    mu_out = [shadow_phi[~shadow_in[:, i], i].mean() for i in range(n)]
    sq_in = sq_out = 0.0
    dof_in = dof_out = 0
    for i in range(n):
        for j in range(k):
            if shadow_in[j, i]:
                sq_in += (shadow_phi[j, i] - mu_in[i]) ** 2
            else:
                sq_out += (shadow_phi[j, i] - mu_out[i]) ** 2
        dof_in += shadow_in[:, i].sum() - 1
        dof_out += (~shadow_in[:, i]).sum() - 1
    sigma_in, sigma_out = math.sqrt(sq_in / dof_in), math.sqrt(sq_out / dof_out)
    return np.array([norm.logpdf(target_phi[i], mu_in[i], sigma_in) - norm.logpdf(target_phi[i], mu_out[i], sigma_out)
                     for i in range(n)])


def test_lira_scores_match_a_per_example_likelihood_ratio_with_pooled_stds():
    k, n = 8, 30
    shadow_in = privacy.shadow_assignment(n, k, seed=1)
    difficulty = RNG.normal(size=n)  # each example's own level, hard or easy
    shadow_phi = difficulty + np.where(shadow_in, 2.0 + RNG.normal(0, 0.5, (k, n)), RNG.normal(0, 1.5, (k, n)))
    target_phi = difficulty + RNG.normal(1.0, 1.0, n)
    np.testing.assert_allclose(privacy.lira_scores(target_phi, shadow_phi, shadow_in),
                               brute_force_lira(target_phi, shadow_phi, shadow_in), rtol=1e-10, atol=1e-10)


def test_lira_also_matches_brute_force_when_examples_have_unequal_in_and_out_counts():
    shadow_in = RNG.random((6, 25)) < 0.5
    shadow_in[0], shadow_in[1] = True, False  # every example has an IN and an OUT shadow, in varying numbers
    shadow_phi, target_phi = RNG.normal(size=(6, 25)), RNG.normal(size=25)
    np.testing.assert_allclose(privacy.lira_scores(target_phi, shadow_phi, shadow_in),
                               brute_force_lira(target_phi, shadow_phi, shadow_in), rtol=1e-10, atol=1e-10)


def test_lira_ranks_a_member_above_a_nonmember_of_a_harder_example():
    # example 0 is easy (phi ~ 10 even when out), example 1 hard (phi ~ 0 out, ~ 3 in): one threshold gets them wrong
    shadow_in = privacy.shadow_assignment(2, 8, seed=0)
    base = np.array([10.0, 0.0]) + np.where(shadow_in, 3.0, 0.0)
    shadow_phi = base + RNG.normal(0, 0.3, base.shape)
    target_phi = np.array([10.0, 3.0])  # example 0 at its OUT mean (non-member), example 1 at its IN mean (member)
    scores = privacy.lira_scores(target_phi, shadow_phi, shadow_in)
    assert target_phi[0] > target_phi[1] and scores[1] > 0 > scores[0]


def test_lira_refuses_an_example_without_out_shadows_and_too_few_shadows_for_a_variance():
    shadow_in = privacy.shadow_assignment(5, 4, seed=0)
    shadow_in[:, 2] = True
    with pytest.raises(ValueError, match="1 no OUT"):
        privacy.lira_scores(np.zeros(5), np.zeros((4, 5)), shadow_in)
    two = privacy.shadow_assignment(5, 2, seed=0)  # one IN and one OUT per example: no spread to measure
    with pytest.raises(ValueError, match="4 or more shadows"):
        privacy.lira_scores(np.zeros(5), RNG.normal(size=(2, 5)), two)
    with pytest.raises(ValueError, match="need target_phi"):
        privacy.lira_scores(np.zeros(4), np.zeros((4, 5)), privacy.shadow_assignment(5, 4, seed=0))


# --------------------------------------------------------------------------- small models


TINY = privacy.SmallRecipe(epochs=2, batch_size=32, lr=2e-3)


def test_as_images_scales_uint8_digits_and_keeps_float_images():
    x, _ = random_digits(3, seed=0)
    images = privacy.as_images(x)
    assert images.dtype == np.float32 and images.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(images[:, 0], x / np.float32(255))
    floats = RNG.random((2, 1, 28, 28)).astype(np.float64)
    assert privacy.as_images(floats).dtype == np.float32 and np.allclose(privacy.as_images(floats), floats)


def test_train_small_is_deterministic_for_a_seed_and_returns_an_eval_model():
    x, y = random_digits(128, seed=1)
    first, again, other = (privacy.train_small(x, y, TINY, seed=s) for s in (3, 3, 4))
    assert not first.training
    assert same_weights(first, again) and not same_weights(first, other)
    torch.manual_seed(3)
    untrained = models.torch_model(privacy.ARCHITECTURE)
    assert not same_weights(first, untrained)  # it did train


def test_train_shadows_scores_the_pool_with_each_shadow_trained_on_its_half():
    x, y = random_digits(64, seed=2)
    assignment = privacy.shadow_assignment(64, 2, seed=0)
    recipe = privacy.SmallRecipe(epochs=1, batch_size=32, lr=2e-3)
    phi = privacy.train_shadows(x, y, assignment, recipe, seed=10)
    images = privacy.as_images(x)
    for k in range(2):
        shadow = privacy.train_small(x[assignment[k]], y[assignment[k]], recipe, seed=11 + k)
        np.testing.assert_allclose(phi[k], privacy.confidence_logit(training.torch_logits(shadow, images), y),
                                   rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="assignment must be"):
        privacy.train_shadows(x, y, assignment[:, :10], recipe)


# --------------------------------------------------------------------------- DP-SGD


DP_TINY = privacy.DpRecipe(epochs=1, batch_size=128, lr=1.0, momentum=0.0, max_grad_norm=1.0)
TARGET_EPSILON = 8.0


@pytest.fixture(scope="module")
def dp_run():
    x, y = random_digits(512, seed=5)
    return x, y, privacy.train_dp(x, y, TARGET_EPSILON, DP_TINY, x_val=x[:100], y_val=y[:100])


def test_train_dp_returns_a_plain_module_without_opacus_hooks_or_attributes(dp_run):
    from opacus import GradSampleModule
    from opacus.grad_sample.gsm_base import OPACUS_PARAM_MONKEYPATCH_ATTRS

    model = dp_run[2].model
    assert type(model) is torch.nn.Sequential and not isinstance(model, GradSampleModule) and not model.training
    for name, module in model.named_modules():
        assert not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                    or module._backward_pre_hooks), name
        assert not getattr(module, "activations", []), name  # no batch of activations kept alive
    for name, p in model.named_parameters():
        assert not [a for a in OPACUS_PARAM_MONKEYPATCH_ATTRS if hasattr(p, a)], name
    x = privacy.as_images(dp_run[0][:4])
    assert model(torch.from_numpy(x)).shape == (4, 10)


def test_train_dp_spends_the_target_epsilon_with_some_noise(dp_run):
    result = dp_run[2]
    assert result.epsilon == pytest.approx(TARGET_EPSILON, rel=0.05) and result.epsilon <= TARGET_EPSILON * 1.001
    assert result.noise_multiplier > 0 and result.delta == DP_TINY.delta
    assert len(result.seconds_per_epoch) == 1 and result.seconds_per_epoch[0] > 0


def test_train_dp_reports_the_returned_models_validation_accuracy(dp_run):
    x, y, result = dp_run
    accuracy = (training.torch_logits(result.model, privacy.as_images(x[:100])).argmax(1) == y[:100]).mean()
    assert result.val_accuracy == [pytest.approx(accuracy)]


def test_train_dp_is_deterministic_for_the_same_seed_and_another_seed_trains_another_model(dp_run):
    x, y, first = dp_run
    again = privacy.train_dp(x, y, TARGET_EPSILON, DP_TINY)
    assert same_weights(first.model, again.model) and again.noise_multiplier == first.noise_multiplier
    other = privacy.train_dp(x, y, TARGET_EPSILON, dataclasses.replace(DP_TINY, seed=1))
    assert not same_weights(first.model, other.model)
    torch.manual_seed(DP_TINY.seed)
    assert not same_weights(first.model, models.torch_model(privacy.ARCHITECTURE))  # it did train


def test_physical_batches_train_the_same_model_and_spend_the_same_epsilon():
    x, y = random_digits(512, seed=6)
    whole = dataclasses.replace(DP_TINY, epochs=2, momentum=0.9)  # cosine: the rate follows the logical steps
    at_once = privacy.train_dp(x, y, TARGET_EPSILON, whole)
    in_pieces = privacy.train_dp(x, y, TARGET_EPSILON, dataclasses.replace(whole, physical_batch_size=32))
    assert in_pieces.epsilon == at_once.epsilon and in_pieces.noise_multiplier == at_once.noise_multiplier
    for a, b in zip(at_once.model.state_dict().values(), in_pieces.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # the same sums, added in another order


def test_dp_learning_rate_schedules():
    cosine = privacy.DpRecipe(epochs=1, batch_size=1, lr=2.0, momentum=0.0, max_grad_norm=1.0)
    linear = privacy.DpRecipe(epochs=1, batch_size=1, lr=2.0, momentum=0.0, max_grad_norm=1.0, schedule="linear")
    constant = privacy.DpRecipe(epochs=1, batch_size=1, lr=2.0, momentum=0.0, max_grad_norm=1.0, schedule="constant")
    rate = privacy.dp_learning_rate
    assert rate(0, 10, cosine) == 2.0 and rate(10, 10, cosine) == pytest.approx(0, abs=1e-12)
    assert rate(5, 10, cosine) == pytest.approx(1.0) and rate(3, 10, cosine) == pytest.approx(1 + math.cos(0.3 * math.pi))
    assert rate(20, 10, cosine) == pytest.approx(0, abs=1e-12)  # past the end it stays at 0
    assert [rate(s, 4, linear) for s in range(5)] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    assert {rate(s, 4, constant) for s in range(5)} == {2.0}


def test_an_unknown_schedule_is_refused_before_any_training():
    recipe = privacy.DpRecipe(epochs=1, batch_size=1, lr=1.0, momentum=0.0, max_grad_norm=1.0, schedule="step")
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        privacy.dp_learning_rate(0, 10, recipe)
    x, y = random_digits(8, seed=0)
    with pytest.raises(ValueError, match="unknown schedule"):
        privacy.train_dp(x, y, 1.0, recipe)
