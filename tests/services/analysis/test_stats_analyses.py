"""The statistics of the newer analyses on values whose answer is known by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate

from services.analysis import stats


def test_median_time_counts_a_missed_target_as_infinite() -> None:
    assert stats.median_time([3.0, 1.0, math.inf]) == 3.0
    assert stats.median_time([1.0, math.inf, math.inf]) == math.inf
    assert stats.median_time([2.0, 4.0]) == 3.0
    assert stats.median_time([2.0, math.inf]) == math.inf
    assert stats.median_time([]) == math.inf


def test_performance_ratios() -> None:
    assert stats.performance_ratios({"a": 2.0, "b": 3.0, "c": math.inf}) == {
        "a": 1.0,
        "b": 1.5,
        "c": math.inf,
    }
    # nobody reached it: nobody earns credit
    assert stats.performance_ratios({"a": math.inf, "b": math.inf}) == {
        "a": math.inf,
        "b": math.inf,
    }
    assert stats.performance_ratios({"a": 0.0, "b": 1.0}) == {"a": 1.0, "b": math.inf}


def test_profile_curve_is_dolan_and_mores_rho() -> None:
    ratios = [1.0, 2.0, math.inf]
    assert stats.profile_curve(ratios, [1.0, 1.9, 2.0, 4.0]) == pytest.approx(
        [1 / 3, 1 / 3, 2 / 3, 2 / 3]
    )
    assert stats.log_taus(4.0, 3) == pytest.approx([1.0, 2.0, 4.0])


def test_algoperf_score_is_the_area_over_tau_divided_by_its_range() -> None:
    # over tau in [1, 4]: ratio 1 holds on 3 units, 2 on 2 units, inf on none
    ratios = [1.0, 2.0, math.inf]
    assert stats.algoperf_score(ratios, 4.0) == pytest.approx((3 / 3 + 2 / 3 + 0) / 3)
    assert stats.algoperf_score([1.0], 4.0) == 1.0
    assert stats.algoperf_score([4.0, 5.0], 4.0) == 0.0
    # independently: the area under the step function by scipy's quadrature, / (4 - 1)
    some = [1.3, 2.7, 3.9, 1.0, 7.0]

    def rho(tau: float) -> float:
        return sum(r <= tau for r in some) / len(some)

    area, _ = integrate.quad(rho, 1.0, 4.0, points=sorted(r for r in some if r < 4), limit=200)
    assert stats.algoperf_score(some, 4.0) == pytest.approx(area / 3.0, abs=1e-9)
    with pytest.raises(ValueError, match="tau_max"):
        stats.algoperf_score([1.0], 1.0)


def test_log_tau_area_is_the_area_over_log_tau() -> None:
    ratios = [1.0, 2.0, math.inf]
    # over log tau in [0, ln 4]: 1 -> 1, 2 -> (ln 4 - ln 2) / ln 4 = 1/2, inf -> 0
    assert stats.log_tau_area(ratios, 4.0) == pytest.approx((1 + 0.5 + 0) / 3)
    some = [1.3, 2.7, 3.9]

    def rho_of_u(u: float) -> float:
        return sum(r <= math.exp(u) for r in some) / len(some)

    area, _ = integrate.quad(rho_of_u, 0.0, math.log(4.0), points=[math.log(r) for r in some])
    assert stats.log_tau_area(some, 4.0) == pytest.approx(area / math.log(4.0), abs=1e-9)
    # the two scores differ: the log-tau area weighs ratios near 1 more
    assert stats.log_tau_area([2.0], 4.0) == pytest.approx(0.5)
    assert stats.algoperf_score([2.0], 4.0) == pytest.approx(2 / 3)


def test_expected_max_is_the_mean_best_of_every_subset() -> None:
    values = [0.2, 0.5, 0.9, 0.5, 0.7]
    for k in range(1, 6):
        subsets = list(itertools.combinations(values, k))
        exact = sum(max(c) for c in subsets) / len(subsets)
        assert stats.expected_max(values, k) == pytest.approx(exact)
    assert stats.expected_max(values, 1) == pytest.approx(np.mean(values))
    assert stats.expected_max(values, 5) == pytest.approx(0.9)  # k = n: the best seen
    assert stats.expected_max_curve(values, 3) == pytest.approx(
        [stats.expected_max(values, k) for k in (1, 2, 3)]
    )
    with pytest.raises(ValueError, match=r"k 6 is not in 1\.\.5"):
        stats.expected_max_curve(values, 6)


def test_expected_max_is_unbiased_where_sampling_with_replacement_is_not() -> None:
    """Draw n = 5 trials from a known distribution many times: the mean of the estimate
    is E[max of k draws] of the distribution (computed here by its own integral), and
    the with-replacement estimate falls short of it."""
    rng = np.random.default_rng(3)
    n, k, reps = 5, 3, 20_000
    trials = rng.uniform(0.0, 1.0, (reps, n))
    truth = k / (k + 1)  # E[max of k uniform(0, 1)] = integral of 1 - x^k
    weights = stats.expected_max_weights(n, k)
    unbiased = np.sort(trials, axis=1) @ weights
    i = np.arange(1, n + 1)
    with_replacement = np.sort(trials, axis=1) @ ((i / n) ** k - ((i - 1) / n) ** k)
    se = unbiased.std() / math.sqrt(reps)
    assert abs(unbiased.mean() - truth) < 4 * se
    assert truth - with_replacement.mean() > 10 * se  # biased low


def test_expected_max_weights_over_many_trials() -> None:
    w = stats.expected_max_weights(3000, 1500)
    assert w.sum() == pytest.approx(1.0)
    assert w[:1499].max() == 0.0
    assert w[-1] == pytest.approx(0.5, rel=1e-9)  # P(the largest of 3000 is among 1500)
