import numpy as np
import pytest
import torch

from helpers import optim


def torch_path(make_optimizer, problem, x0, steps):
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer([x])
    A = torch.tensor(problem.A)
    path = [x.detach().numpy().copy()]
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * x @ A @ x).backward()
        opt.step()
        path.append(x.detach().numpy().copy())
    return np.array(path)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: optim.SGD(0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
        (lambda: optim.Momentum(0.02, 0.9), lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)),
        (lambda: optim.Adam(0.1), lambda p: torch.optim.Adam(p, lr=0.1)),
    ],
    ids=["sgd", "momentum", "adam"],
)
def test_optimisers_follow_torch_optim_step_for_step(ours, theirs):
    problem, x0 = optim.Quadratic(), [2.5, -1.5]
    expected = torch_path(theirs, problem, x0, 60)
    assert np.allclose(optim.run(ours(), problem.grad, x0, 60), expected, rtol=1e-10, atol=1e-12)


def test_gradient_descent_diverges_exactly_past_two_over_the_largest_eigenvalue():
    problem = optim.Quadratic(eigenvalues=(1.0, 20.0))
    threshold = problem.divergence_threshold()
    assert threshold == pytest.approx(0.1)
    below = optim.run(optim.SGD(0.99 * threshold), problem.grad, [1.0, 1.0], 500)
    above = optim.run(optim.SGD(1.01 * threshold), problem.grad, [1.0, 1.0], 500)
    assert problem(below[-1]) < 1e-6 < 1e6 < problem(above[-1])


def test_quadratic_gradient_is_the_derivative_of_its_value():
    problem = optim.Quadratic()
    x, h = np.array([0.3, -0.7]), 1e-6
    numeric = [(problem(x + h * e) - problem(x - h * e)) / (2 * h) for e in np.eye(2)]
    assert np.allclose(problem.grad(x), numeric)


def test_diverges_tells_the_two_sides_of_the_threshold_apart_without_warnings():
    problem = optim.Quadratic()
    threshold = problem.divergence_threshold()
    with np.errstate(all="raise"):  # any overflow warning escaping would fail here
        assert not optim.diverges(optim.SGD(0.98 * threshold), problem, [1.0, 1.0])
        assert optim.diverges(optim.SGD(3 * threshold), problem, [1.0, 1.0], steps=2000)
