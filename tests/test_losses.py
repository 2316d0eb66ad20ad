import numpy as np
import pytest
from scipy.special import expit
from scipy.special import logsumexp as scipy_logsumexp

from helpers import gradcheck, losses

rng = np.random.default_rng(0)


def test_softmax_is_a_distribution_and_matches_the_textbook_formula_where_that_works():
    z = rng.normal(size=(5, 10))
    p = losses.softmax(z)
    assert np.allclose(p.sum(axis=1), 1) and (p > 0).all()
    assert np.allclose(p, losses.softmax_naive(z))


def test_large_logits_break_the_naive_softmax_but_not_the_stable_one():
    z = np.array([[1000.0, 0.0, -1000.0]])
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(losses.softmax_naive(z)).any()
    assert np.allclose(losses.softmax(z), [[1, 0, 0]])
    assert np.allclose(losses.log_softmax(z), [[0, -1000, -2000]])


def test_logsumexp_matches_scipy():
    z = rng.normal(scale=50, size=(4, 7))
    assert np.allclose(losses.logsumexp(z), scipy_logsumexp(z, axis=-1))


def test_cross_entropy_on_logits_equals_cross_entropy_on_softmax():
    z, y = rng.normal(size=(8, 10)), rng.integers(0, 10, 8)
    assert losses.cross_entropy_with_logits(z, y) == pytest.approx(losses.cross_entropy(losses.softmax(z), y))


def test_bce_with_logits_equals_bce_on_sigmoid_and_stays_finite():
    z, y = rng.normal(size=20), rng.integers(0, 2, 20)
    assert losses.binary_cross_entropy_with_logits(z, y) == pytest.approx(losses.binary_cross_entropy(expit(z), y))
    assert losses.binary_cross_entropy_with_logits(np.array([1000.0, -1000.0]), np.array([0, 1])) == pytest.approx(1000)


def test_mse_by_hand():
    assert losses.mse(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == pytest.approx(2.5)


def test_the_cross_entropy_gradient_is_softmax_minus_onehot():
    z, y = rng.normal(size=(6, 4)), rng.integers(0, 4, 6)
    numeric = gradcheck.numerical_gradient(lambda: losses.cross_entropy_with_logits(z, y), z)
    assert gradcheck.relative_error(losses.cross_entropy_grad(z, y), numeric) < 1e-8
