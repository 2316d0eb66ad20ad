"""An A/B test with honest statistics (chapter 11): two model versions serve random halves of the traffic, and the
question is whether version B's success rate (accuracy, click-through, "the answer was accepted") differs from A's.
Three things go wrong in practice, and this module has one function for each:

- too few requests: `sample_size_two_proportions` says, before the test starts, how many requests per arm a given
  difference needs (the same number statsmodels' power solver gives, computed with scipy only, so it can be read);
- the wrong test: `two_proportion_test` is the textbook pooled z-test with a Wald interval for the difference;
- peeking: looking at the z-test's p-value every hour and stopping the first time it dips below alpha turns a 5%
  false-positive rate into several times that (`aa_peeking_simulation` measures it). The mixture SPRT
  (`msprt_statistic`, `always_valid_p_value`; Johari, Pekelis & Walsh, "Always valid inference", Operations Research
  2022; the test Optimizely runs) may be checked after every request and still keeps its false-positive rate <= alpha.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.optimize import brentq

# The mSPRT mixes over true differences theta ~ N(0, TAU^2). With the normal approximation, the expected log of the
# statistic under a true difference delta is largest for tau = |delta| at every sample size (d/dtau of
# -log(1 + n tau^2/V)/2 + (1 + n delta^2/V) n tau^2 / (2 (V + n tau^2)) vanishes there), so tau is set to the
# difference the chapter looks for: half a point of success rate (0.970 -> 0.975). Any tau > 0 keeps the guarantee;
# tau only moves where the test is fastest.
DEFAULT_TAU = 0.005


def _check_probability(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def sample_size_two_proportions(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Requests per arm for a two-sided two-proportion z-test to detect p1 vs p2 with the given power.

    The effect size is Cohen's h = 2 asin(sqrt(p2)) - 2 asin(sqrt(p1)): the arcsine makes the variance of each arm's
    estimate 1/n whatever p is, so the difference has variance 2/n and the closed form is
    n = 2 ((z_{1-alpha/2} + z_power) / h)^2. That formula ignores the far tail (rejecting in the wrong direction),
    which still adds ~1e-6 of power; at n ~ 350,000 that is worth most of a request, enough to change ceil(n). So the
    exact two-tailed power equation is solved (brentq, bracketed by 0 and the closed form) and the result agrees
    with statsmodels' NormalIndPower().solve_power to the request."""
    for name, value in (("p1", p1), ("p2", p2), ("alpha", alpha), ("power", power)):
        _check_probability(name, value)
    if p1 == p2:
        raise ValueError(f"p1 and p2 are equal ({p1}): no sample size detects a difference of zero")
    if power <= alpha:
        raise ValueError(f"power ({power}) must exceed alpha ({alpha}): any test rejects with probability alpha")
    h = abs(2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1)))
    critical = stats.norm.ppf(1 - alpha / 2)
    closed_form = 2 * ((critical + stats.norm.ppf(power)) / h) ** 2

    def power_minus_target(n: float) -> float:
        shift = h * math.sqrt(n / 2)
        return stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift) - power

    # power is alpha at n = 0 and at least `power` at the closed form (which drops a positive term): a sign change
    return math.ceil(brentq(power_minus_target, 0.0, closed_form, xtol=1e-9, rtol=1e-15))


def _pooled_z(successes_a, n_a, successes_b, n_b) -> np.ndarray:
    """z of rate_b - rate_a under H0 (one common rate, estimated from both arms); 0 where that rate is 0 or 1
    (no variance seen, so no evidence). Vectorised: the simulation calls it on every look of every test at once."""
    successes_a, successes_b = np.asarray(successes_a, np.float64), np.asarray(successes_b, np.float64)
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    difference = successes_b / n_b - successes_a / n_a
    return np.divide(difference, se, out=np.zeros_like(se), where=se > 0)


def two_proportion_test(successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = 0.95) -> dict:
    """The fixed-horizon test, run once at the planned sample size: the difference b - a, the pooled z statistic,
    its two-sided p-value and a Wald confidence interval for the difference (unpooled: the interval is about the
    difference, whatever it is, while the z-test assumes H0's single rate)."""
    for name, successes, n in (("a", successes_a, n_a), ("b", successes_b, n_b)):
        if n <= 0 or not 0 <= successes <= n:
            raise ValueError(f"arm {name}: need n > 0 and 0 <= successes <= n, got {successes} of {n}")
    _check_probability("confidence", confidence)
    rate_a, rate_b = successes_a / n_a, successes_b / n_b
    z = float(_pooled_z(successes_a, n_a, successes_b, n_b))
    half_width = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt(rate_a * (1 - rate_a) / n_a + rate_b * (1 - rate_b) / n_b)
    return {"difference": rate_b - rate_a, "z": z, "p_value": float(2 * stats.norm.sf(abs(z))),
            "confidence_interval": (rate_b - rate_a - half_width, rate_b - rate_a + half_width)}


def _log_msprt(successes_a, successes_b, n, tau: float) -> np.ndarray:
    """log Lambda_n; in logs so that a large real difference does not overflow exp. Lambda_0 = 1, and where the
    pooled rate is 0 or 1 (V = 0, nothing varies yet) log Lambda is -inf: no evidence either way."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    successes_a, successes_b, n = (np.asarray(x, np.float64) for x in (successes_a, successes_b, n))
    with np.errstate(divide="ignore", invalid="ignore"):  # n = 0 and V = 0 are set just below
        pooled = (successes_a + successes_b) / (2 * n)
        variance = 2 * pooled * (1 - pooled)  # V: variance of one pair's difference b_i - a_i under H0
        d = (successes_b - successes_a) / n
        spread = variance + n * tau**2
        log_lambda = 0.5 * np.log(variance / spread) + n**2 * tau**2 * d**2 / (2 * variance * spread)
    log_lambda = np.where(variance > 0, log_lambda, -np.inf)
    return np.where(n > 0, log_lambda, 0.0)


def msprt_statistic(successes_a, successes_b, n, tau: float = DEFAULT_TAU) -> np.ndarray | float:
    """Lambda_n = sqrt(V / (V + n tau^2)) exp(n^2 tau^2 d^2 / (2 V (V + n tau^2))) after n pairs of requests, with
    d = rate_b - rate_a and V = 2 p(1 - p) (pooled p). It is the likelihood ratio of "the difference is some theta
    drawn from N(0, tau^2)" to "no difference"; under H0 it is a martingale with mean 1, so by Ville's inequality it
    ever reaches 1/alpha with probability at most alpha, however often it is looked at. Arrays of cumulative counts
    give one Lambda per element."""
    with np.errstate(over="ignore"):  # an enormous difference gives inf: certainly past 1/alpha
        result = np.exp(_log_msprt(successes_a, successes_b, n, tau))
    return float(result) if result.ndim == 0 else result


def always_valid_p_value(successes_a, successes_b, n, tau: float = DEFAULT_TAU) -> np.ndarray:
    """p_n = min(p_{n-1}, 1 / Lambda_n), p_0 = 1, over cumulative counts along the last axis: a p-value that may be
    read at every look (p_n < alpha exactly when Lambda has reached 1/alpha). It never rises: evidence once seen
    stays seen."""
    p = np.exp(-np.maximum(_log_msprt(successes_a, successes_b, n, tau), 0.0))  # min(1, 1/Lambda), no overflow
    return np.minimum.accumulate(np.atleast_1d(p), axis=-1)


def aa_peeking_simulation(p: float, n_per_arm: int, looks: int, tests: int, alpha: float = 0.05, seed: int = 0,
                          tau: float = DEFAULT_TAU) -> dict:
    """`tests` A/A experiments (both arms Bernoulli(p): any "significant" result is a false positive), each looked at
    `looks` times at equally spaced sample sizes up to n_per_arm. The false-positive rate, with its Monte-Carlo
    standard error, of the z-test once at the end, of the z-test at every look (stopping at the first p < alpha), and
    of the mSPRT at every look. Vectorised: binomial counts per look, summed cumulatively, for all tests at once."""
    _check_probability("p", p)
    _check_probability("alpha", alpha)
    if not 1 <= looks <= n_per_arm or tests < 1:
        raise ValueError(f"need 1 <= looks <= n_per_arm and tests >= 1, got {looks}, {n_per_arm}, {tests}")
    rng = np.random.default_rng(seed)
    n = np.linspace(0, n_per_arm, looks + 1).round().astype(np.int64)[1:]  # the sample size at each look
    increments = np.diff(n, prepend=0)
    successes_a = rng.binomial(increments, p, size=(tests, looks)).cumsum(axis=1)
    successes_b = rng.binomial(increments, p, size=(tests, looks)).cumsum(axis=1)
    significant = 2 * stats.norm.sf(np.abs(_pooled_z(successes_a, n, successes_b, n))) < alpha
    rejected = {"fixed_horizon": significant[:, -1], "peeking": significant.any(axis=1),
                "msprt": (_log_msprt(successes_a, successes_b, n, tau) >= math.log(1 / alpha)).any(axis=1)}
    return {name: {"false_positive_rate": float(r.mean()), "standard_error": math.sqrt(r.mean() * (1 - r.mean()) / tests)}
            for name, r in rejected.items()}
