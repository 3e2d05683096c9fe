"""Every statistic on values whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from services.analysis import stats


def test_describe_mean_sample_std_and_t_interval() -> None:
    values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    s = stats.describe(values)
    assert s.n == 8
    assert s.mean == pytest.approx(5.0)
    # sum of squared deviations is 32; sample variance 32 / 7 (not 32 / 8)
    assert s.std == pytest.approx(math.sqrt(32 / 7))
    # the same interval from scipy: t(7) quantile, standard error with divisor n - 1
    low, high = scipy_stats.t.interval(0.95, 7, loc=5.0, scale=scipy_stats.sem(values))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert s.interval == stats.STUDENT_T


def test_describe_skips_none_and_gives_no_interval_for_one_value() -> None:
    assert stats.describe([]) == stats.Stat(0, None, None, None, None)
    assert stats.describe([None, 0.5]) == stats.Stat(1, 0.5, None, None, None)
    # an infinite value: the mean says so, and no interval pretends to bound it
    inf = stats.describe([1.0, math.inf])
    assert inf.mean == math.inf and inf.ci_low is None and inf.interval is None


def test_two_values_give_the_wide_interval_they_warrant() -> None:
    # n = 2: mean -/+ t(1) s / sqrt(2) with t(1) = 12.706; s = |a - b| / sqrt(2)
    s = stats.describe([0.0, 1.0])
    half = 12.706204736174707 * (1 / math.sqrt(2)) / math.sqrt(2)
    assert (s.ci_low, s.ci_high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))


def test_an_interval_is_cut_to_what_the_metric_can_be() -> None:
    values = [0.1, 0.98, 0.1]
    free = stats.describe(values)
    cut = stats.describe(values, (0.0, 1.0))
    assert free.ci_low is not None and free.ci_high is not None
    assert free.ci_low < 0.0 and free.ci_high > 1.0
    assert (cut.ci_low, cut.ci_high, cut.mean, cut.std) == (0.0, 1.0, free.mean, free.std)


def test_constant_values_have_a_zero_width_interval() -> None:
    s = stats.describe([0.7, 0.7, 0.7])
    assert s.std == pytest.approx(0.0, abs=1e-12)
    assert (s.ci_low, s.ci_high) == (pytest.approx(0.7), pytest.approx(0.7))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 6, 9, 10, 29, 30, 99, 1000, 9999, 10_001, 10**6])
def test_t_critical_matches_scipy(df: int) -> None:
    assert stats.t_critical(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-10)
    assert stats.t_critical(df, 0.8) == pytest.approx(scipy_stats.t.ppf(0.9, df), rel=1e-10)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 8, 50, 51])
def test_t_cdf_series_matches_scipy(df: int) -> None:
    for t in (0.0, 0.3, 1.0, 2.5, 12.0):
        expected = scipy_stats.t.cdf(t, df) - scipy_stats.t.cdf(-t, df)
        assert stats.t_cdf_two_sided(t, df) == pytest.approx(expected, abs=1e-13)


def test_t_intervals_are_row_wise_describe() -> None:
    rows = np.array([[1.0, 2.0, 6.0], [0.5, 0.5, 0.8]])
    mean, std, low, high = stats.t_intervals(rows)
    for i, row in enumerate(rows):
        d = stats.describe(row.tolist())
        assert (mean[i], std[i], low[i], high[i]) == pytest.approx(
            (d.mean, d.std, d.ci_low, d.ci_high)
        )
    with pytest.raises(ValueError, match="at least two"):
        stats.t_intervals(np.array([[1.0]]))


def test_time_to_target_reached() -> None:
    t = stats.time_to_target([0.5, 0.95, 0.97], [1.5, 3.0, 4.5], 0.95)
    assert t == stats.TimeToTarget(reached=True, epochs=2, seconds=3.0)


def test_time_to_target_not_reached_counts_the_whole_budget() -> None:
    t = stats.time_to_target([0.5, 0.9, None, 0.94], [1.0, 2.0, 3.0, 4.25], 0.95)
    assert t == stats.TimeToTarget(reached=False, epochs=4, seconds=4.25)
    # stopped after 2 of a budget of 10 epochs: 10 epochs at its pace of 1.5 s an epoch
    t = stats.time_to_target([0.5, 0.6], [1.5, 3.0], 0.95, budget=10)
    assert t == stats.TimeToTarget(reached=False, epochs=10, seconds=15.0)
    # diverged before its first epoch was written: the budget, no seconds to scale
    assert stats.time_to_target([], [], 0.95, budget=10) == stats.TimeToTarget(False, 10, None)
    # reaching it counts however long the budget was
    assert stats.time_to_target([0.96], [2.0], 0.95, budget=10) == stats.TimeToTarget(True, 1, 2.0)


def test_auc_is_the_trapezoid_over_epochs() -> None:
    # (1 + 0.5) / 2 + (0.5 + 0.25) / 2 = 1.125
    assert stats.auc_trapezoid([1.0, 0.5, 0.25]) == pytest.approx(1.125)
    assert stats.auc_trapezoid([1.0, 0.5, 0.25], horizon=2) == pytest.approx(0.75)
    assert stats.auc_trapezoid([1.0]) is None
    assert stats.auc_trapezoid([1.0, None, 0.2]) is None


def test_win_probability_pairs_by_seed() -> None:
    # epochs to target, lower is better: seed 1 win, seed 2 tie, seed 3 win; seed 4 unmatched
    a = [(1, 2.0), (2, 3.0), (3, 1.0), (4, 9.0)]
    b = [(1, 3.0), (2, 3.0), (3, 3.0)]
    p = stats.win_probability("a", a, "b", b, lower_is_better=True)
    assert p.paired and p.pairs == 3
    assert p.probability == pytest.approx(2.5 / 3)
    q = stats.win_probability("b", b, "a", a, lower_is_better=True)
    assert q.probability == pytest.approx(0.5 / 3)


def test_win_probability_without_common_seeds_compares_all_pairs() -> None:
    a = [(1, 0.9), (2, 0.8)]
    b = [(3, 0.85), (4, 0.95)]
    p = stats.win_probability("a", a, "b", b, lower_is_better=False)
    # pairs: .9>.85 win, .9<.95, .8<.85, .8<.95 -> 1 of 4
    assert (p.paired, p.pairs, p.probability) == (False, 4, 0.25)


def test_win_probability_with_a_repeated_seed_compares_all_pairs() -> None:
    a = [(1, 0.9), (1, 0.7)]
    b = [(1, 0.8)]
    p = stats.win_probability("a", a, "b", b, lower_is_better=False)
    assert (p.paired, p.pairs, p.probability) == (False, 2, 0.5)


def test_win_probability_leaves_out_missing_scores() -> None:
    p = stats.win_probability("a", [(1, None)], "b", [(1, 0.5)], lower_is_better=False)
    assert (p.probability, p.pairs) == (None, 0)


def test_rank_orders_by_mean_with_missing_last() -> None:
    means = {"sgd": 3.0, "adam": 2.0, "rmsprop": 2.0, "broken": None, "nan": math.nan}
    assert stats.rank(means, lower_is_better=True) == ["adam", "rmsprop", "sgd", "broken", "nan"]
    assert stats.rank({"a": 0.9, "b": 0.95}, lower_is_better=False) == ["b", "a"]
