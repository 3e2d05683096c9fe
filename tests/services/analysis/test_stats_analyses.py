"""The statistics of the newer analyses on values whose answer is known by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

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


def test_profile_curve_and_area() -> None:
    ratios = [1.0, 2.0, math.inf]
    assert stats.profile_curve(ratios, [1.0, 1.9, 2.0, 4.0]) == pytest.approx(
        [1 / 3, 1 / 3, 2 / 3, 2 / 3]
    )
    # over log tau in [1, 4]: 1 -> 1, 2 -> (ln 4 - ln 2) / ln 4 = 1/2, inf -> 0
    assert stats.profile_area(ratios, 4.0) == pytest.approx((1 + 0.5 + 0) / 3)
    assert stats.profile_area([1.0], 4.0) == 1.0
    assert stats.profile_area([5.0], 4.0) == 0.0
    # the exact area equals a fine numerical integral of the step function
    taus = np.geomspace(1.0, 4.0, 200_001)
    rho = np.array(stats.profile_curve([1.3, 2.7, 3.9], list(taus[::100])))
    u = np.log(taus[::100])
    numeric = float(np.sum((rho[:-1] + rho[1:]) / 2 * np.diff(u)) / math.log(4.0))
    assert stats.profile_area([1.3, 2.7, 3.9], 4.0) == pytest.approx(numeric, abs=1e-3)
    with pytest.raises(ValueError, match="tau_max"):
        stats.profile_area([1.0], 1.0)
    assert stats.log_taus(4.0, 3) == pytest.approx([1.0, 2.0, 4.0])


def test_expected_max_matches_enumeration() -> None:
    values = [0.2, 0.5, 0.9, 0.5]
    for k in (1, 2, 3):
        draws = list(itertools.product(values, repeat=k))
        exact = sum(max(d) for d in draws) / len(draws)
        assert stats.expected_max(values, k) == pytest.approx(exact)
    assert stats.expected_max(values, 1) == pytest.approx(np.mean(values))


def test_expected_max_curve_band_and_bounds() -> None:
    curve = stats.expected_max_curve([0.1, 0.5, 0.9], 3, seed=1, samples=2000)
    assert curve.ks == (1, 2, 3)
    assert curve.mean[0] == pytest.approx(0.5)
    assert list(curve.mean) == sorted(curve.mean)  # more trials never expect worse
    for low, mean, high in zip(curve.ci_low, curve.mean, curve.ci_high, strict=True):
        assert 0.1 <= low <= mean <= high <= 0.9
    again = stats.expected_max_curve([0.1, 0.5, 0.9], 3, seed=1, samples=2000)
    assert again == curve  # the same seed, the same band
    one = stats.expected_max_curve([0.7], 1, seed=0)
    assert one.mean == (0.7,) and math.isnan(one.ci_low[0])
    with pytest.raises(ValueError, match=r"k 4 is not in 1\.\.3"):
        stats.expected_max_curve([0.1, 0.5, 0.9], 4, seed=0)
