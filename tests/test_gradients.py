import numpy as np
import pytest

from helpers import gradcheck, mlp


def test_finite_differences_of_a_known_function():
    x = np.array([1.0, -2.0, 0.5])
    numeric = gradcheck.numerical_gradient(lambda: float(np.sum(x**3)), x)
    assert np.allclose(numeric, 3 * x**2, atol=1e-8)
    assert np.array_equal(x, [1.0, -2.0, 0.5])  # restored after nudging


def test_finite_differences_on_chosen_coordinates_only():
    x = np.arange(4.0)
    numeric = gradcheck.numerical_gradient(lambda: float(np.sum(x**2)), x, indices=[1, 3])
    assert np.allclose(numeric, [0, 2, 0, 6])


def test_relative_error_is_scale_free_and_zero_for_equal_inputs():
    a = np.array([1e-8, 2e-8])
    assert gradcheck.relative_error(a, a) == 0
    assert gradcheck.relative_error(a, a * 1.01) == pytest.approx(gradcheck.relative_error(a * 1e8, a * 1.01e8))


def test_hand_written_backprop_matches_finite_differences():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(5, 7)), rng.integers(0, 3, 5)
    params = mlp.init_params(7, 4, 3, seed=2)
    _, grads = mlp.loss_and_grads(params, X, y)
    for name, value in params.items():
        numeric = gradcheck.numerical_gradient(lambda: mlp.loss(params, X, y), value)
        assert gradcheck.relative_error(grads[name], numeric) < 1e-7, name


def test_a_wrong_gradient_is_caught():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(5, 7)), rng.integers(0, 3, 5)
    params = mlp.init_params(7, 4, 3)
    _, grads = mlp.loss_and_grads(params, X, y)
    numeric = gradcheck.numerical_gradient(lambda: mlp.loss(params, X, y), params["W1"])
    assert gradcheck.relative_error(grads["W1"] * 1.001, numeric) > 1e-4


def test_a_non_contiguous_array_is_refused_rather_than_silently_checked_as_zero():
    x = np.arange(12.0).reshape(3, 4).T  # a transposed view: reshape(-1) would copy it
    with pytest.raises(ValueError, match="C-contiguous float"):
        gradcheck.numerical_gradient(lambda: float(np.sum(x**2)), x)
