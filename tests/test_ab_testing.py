"""A/B testing (chapter 11): the sample size agrees with statsmodels to the request, the z-test and its interval agree
with statsmodels, peeking at a z-test inflates its false-positive rate while the fixed-horizon test and the mSPRT
keep theirs, and the mSPRT still finds a real difference."""

import itertools
import math
import time

import numpy as np
import pytest

from helpers import ab_testing

# p1 from 0.90 to 0.99, B better or worse by 0.2 to 2 points: the range of model accuracies a chapter compares
GRID = [(p1, round(p1 + sign * d, 4), alpha, power)
        for p1, d, sign, alpha, power in itertools.product(np.round(np.arange(0.90, 0.995, 0.01), 2), [0.002, 0.005, 0.01, 0.02],
                                                           [1, -1], [0.01, 0.05], [0.8, 0.9])
        if 0 < p1 + sign * d < 1]


def test_the_sample_size_agrees_with_statsmodels_to_the_request():
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    solver = NormalIndPower()
    for p1, p2, alpha, power in GRID:
        h = proportion_effectsize(p2, p1)
        expected = solver.solve_power(effect_size=h, alpha=alpha, power=power, ratio=1, alternative="two-sided")
        n = ab_testing.sample_size_two_proportions(p1, p2, alpha, power)
        assert n == math.ceil(expected), (p1, p2, alpha, power)
        # and it is the smallest n with enough power: n - 1 requests per arm fall short
        assert solver.power(h, n, alpha, ratio=1, alternative="two-sided") >= power
        assert solver.power(h, n - 1, alpha, ratio=1, alternative="two-sided") < power


def test_the_sample_size_of_the_chapter_and_its_symmetry():
    n = ab_testing.sample_size_two_proportions(0.97, 0.975)
    assert n == 16759  # half a point at 97%: tens of thousands of requests in all
    assert ab_testing.sample_size_two_proportions(0.975, 0.97) == n
    assert ab_testing.sample_size_two_proportions(0.97, 0.975, power=0.9) > n
    assert ab_testing.sample_size_two_proportions(0.97, 0.975, alpha=0.01) > n


@pytest.mark.parametrize("counts", [(950, 1000, 968, 1000), (9700, 10000, 9752, 10000), (45, 60, 70, 80),
                                    (300, 1000, 280, 900), (1000, 1000, 999, 1000)])
def test_the_z_test_and_its_interval_match_statsmodels(counts):
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    successes_a, n_a, successes_b, n_b = counts
    result = ab_testing.two_proportion_test(successes_a, n_a, successes_b, n_b)
    z, p = proportions_ztest([successes_b, successes_a], [n_b, n_a])  # b - a, pooled, two-sided
    assert result["z"] == pytest.approx(z, rel=1e-12) and result["p_value"] == pytest.approx(p, rel=1e-9)
    assert result["difference"] == pytest.approx(successes_b / n_b - successes_a / n_a)
    low, high = confint_proportions_2indep(successes_b, n_b, successes_a, n_a, method="wald", compare="diff")
    np.testing.assert_allclose(result["confidence_interval"], (low, high), rtol=1e-12)


def test_the_z_test_sees_no_evidence_when_nothing_varies():
    result = ab_testing.two_proportion_test(500, 500, 300, 300)
    assert result["z"] == 0.0 and result["p_value"] == 1.0 and result["difference"] == 0.0


def test_the_msprt_statistic_is_the_ratio_of_marginal_likelihoods():
    """An independent derivation: d ~ N(theta, V/n) with theta ~ N(0, tau^2) has marginal N(0, V/n + tau^2); Lambda is
    that density over H0's N(0, V/n), both at the observed d."""
    from scipy import stats

    rng = np.random.default_rng(0)
    n = rng.integers(1, 20_000, size=200)
    successes_a, successes_b = rng.binomial(n, 0.95), rng.binomial(n, 0.955)
    tau = 0.01
    pooled = (successes_a + successes_b) / (2 * n)
    variance, d = 2 * pooled * (1 - pooled), (successes_b - successes_a) / n
    expected = stats.norm.pdf(d, 0, np.sqrt(variance / n + tau**2)) / stats.norm.pdf(d, 0, np.sqrt(variance / n))
    np.testing.assert_allclose(ab_testing.msprt_statistic(successes_a, successes_b, n, tau), expected, rtol=1e-9)
    assert ab_testing.msprt_statistic(3, 3, 0) == 1.0  # before any request: no evidence
    assert ab_testing.msprt_statistic(10, 10, 10) == 0.0  # everything succeeded: nothing varies, no evidence


def test_the_always_valid_p_value_is_the_running_minimum_of_one_over_lambda():
    rng = np.random.default_rng(1)
    n = np.arange(100, 10_001, 100)
    successes_a, successes_b = rng.binomial(100, 0.9, size=100).cumsum(), rng.binomial(100, 0.92, size=100).cumsum()
    p = ab_testing.always_valid_p_value(successes_a, successes_b, n)
    lambdas = ab_testing.msprt_statistic(successes_a, successes_b, n)
    running = 1.0
    for got, lam in zip(p, lambdas):
        running = min(running, 1.0, 1 / lam)
        assert got == pytest.approx(running, rel=1e-12)
    assert p[-1] < 0.05  # 2 points at 90% over 10,000 requests per arm: found


def test_peeking_inflates_the_false_positive_rate_and_the_msprt_does_not():
    alpha, n = 0.05, ab_testing.sample_size_two_proportions(0.97, 0.975)
    result = ab_testing.aa_peeking_simulation(0.97, n, looks=100, tests=2000, alpha=alpha)
    fixed, peeking, msprt = (result[k] for k in ("fixed_horizon", "peeking", "msprt"))
    assert abs(fixed["false_positive_rate"] - alpha) < 3 * fixed["standard_error"]  # the z-test at the end is honest
    assert peeking["false_positive_rate"] > 2 * alpha
    # Armitage, McPherson & Rowe (1969): 100 equally spaced looks at a nominal 0.05 reject 37.4% of true nulls
    assert abs(peeking["false_positive_rate"] - 0.374) < 4 * peeking["standard_error"]
    assert msprt["false_positive_rate"] <= alpha + 3 * msprt["standard_error"]
    for name, r in result.items():
        rate = r["false_positive_rate"]
        assert r["standard_error"] == pytest.approx(math.sqrt(rate * (1 - rate) / 2000)), name


def test_the_simulation_is_fast_and_reproducible():
    start = time.perf_counter()
    first = ab_testing.aa_peeking_simulation(0.97, 15_000, looks=100, tests=2000, seed=3)
    assert time.perf_counter() - start < 2.0
    assert ab_testing.aa_peeking_simulation(0.97, 15_000, looks=100, tests=2000, seed=3) == first


def msprt_detection_rate(p_a: float, p_b: float, n_per_arm: int, looks: int, runs: int, alpha: float = 0.05,
                         seed: int = 0) -> float:
    """The share of simulated A/B tests (A ~ Bernoulli(p_a), B ~ Bernoulli(p_b)) whose mSPRT reaches 1/alpha at some
    look; written apart from the module's simulation, from the public msprt_statistic, with the same draws."""
    rng = np.random.default_rng(seed)
    n = np.linspace(0, n_per_arm, looks + 1).round().astype(int)[1:]
    increments = np.diff(n, prepend=0)
    successes_a = rng.binomial(increments, p_a, size=(runs, looks)).cumsum(axis=1)
    successes_b = rng.binomial(increments, p_b, size=(runs, looks)).cumsum(axis=1)
    return float((ab_testing.msprt_statistic(successes_a, successes_b, n) >= 1 / alpha).any(axis=1).mean())


def test_the_simulations_msprt_checks_every_look_against_one_over_alpha():
    """The A/A bound above cannot see a wrong mSPRT that still stays under alpha (a threshold of 1/(2 alpha), a check
    only at the end): the simulation's mSPRT column must be exactly what msprt_statistic >= 1/alpha at any look gives."""
    for alpha, looks in ((0.05, 100), (0.2, 30)):
        result = ab_testing.aa_peeking_simulation(0.97, 16_759, looks=looks, tests=2000, alpha=alpha, seed=5)
        assert result["msprt"]["false_positive_rate"] == msprt_detection_rate(0.97, 0.97, 16_759, looks, 2000, alpha, seed=5)
        assert result["msprt"]["false_positive_rate"] > 0  # the comparison is not 0 == 0


def test_the_msprt_detects_a_real_difference():
    assert msprt_detection_rate(0.90, 0.95, 5000, looks=100, runs=500) >= 0.99
    assert msprt_detection_rate(0.95, 0.90, 5000, looks=100, runs=500) >= 0.99  # B worse: two-sided


@pytest.mark.parametrize("call, message", [
    (lambda: ab_testing.sample_size_two_proportions(0.97, 0.97), "equal"),
    (lambda: ab_testing.sample_size_two_proportions(0.0, 0.5), "p1 must be strictly between 0 and 1"),
    (lambda: ab_testing.sample_size_two_proportions(0.5, 1.0), "p2 must be strictly between 0 and 1"),
    (lambda: ab_testing.sample_size_two_proportions(0.5, 0.6, alpha=1.5), "alpha must be"),
    (lambda: ab_testing.sample_size_two_proportions(0.5, 0.6, alpha=0.1, power=0.05), "must exceed alpha"),
    (lambda: ab_testing.two_proportion_test(11, 10, 5, 10), "arm a"),
    (lambda: ab_testing.two_proportion_test(5, 10, 5, 0), "arm b"),
    (lambda: ab_testing.msprt_statistic(5, 6, 10, tau=0.0), "tau must be positive"),
    (lambda: ab_testing.aa_peeking_simulation(1.2, 1000, 10, 10), "p must be strictly between 0 and 1"),
    (lambda: ab_testing.aa_peeking_simulation(0.5, 10, 20, 10), "looks <= n_per_arm"),
])
def test_bad_inputs_are_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()
