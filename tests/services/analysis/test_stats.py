"""Every statistic on values whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.analysis import stats


def test_describe_mean_and_sample_std() -> None:
    s = stats.describe([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], seed=0, samples=2000)
    assert s.n == 8
    assert s.mean == pytest.approx(5.0)
    # sum of squared deviations is 32; sample variance 32 / 7 (not 32 / 8)
    assert s.std == pytest.approx(math.sqrt(32 / 7))
    assert s.ci_low is not None and s.ci_high is not None
    assert s.ci_low < 5.0 < s.ci_high


def test_describe_skips_none_and_handles_small_samples() -> None:
    assert stats.describe([]) == stats.Stat(0, None, None, None, None)
    assert stats.describe([None, 0.5]) == stats.Stat(1, 0.5, None, None, None)


def test_bootstrap_of_two_values_has_a_known_interval() -> None:
    # Means of resamples of {0, 1}: 0 (p=1/4), 0.5 (1/2), 1 (1/4): the 2.5% and
    # 97.5% quantiles are 0 and 1 exactly.
    assert stats.bootstrap_ci([0.0, 1.0], seed=3, samples=4000) == (0.0, 1.0)


def test_bootstrap_of_constant_values_is_the_value() -> None:
    assert stats.bootstrap_ci([0.7, 0.7, 0.7], seed=1) == (pytest.approx(0.7), pytest.approx(0.7))


def test_bootstrap_is_reproducible_by_seed() -> None:
    values = [0.9113, 0.9521, 0.9787, 0.9301, 0.9964, 0.9402, 0.9655]
    a = stats.bootstrap_ci(values, seed=42, samples=97)
    b = stats.bootstrap_ci(values, seed=42, samples=97)
    c = stats.bootstrap_ci(values, seed=43, samples=97)
    assert a == b
    assert a != c
    assert min(values) <= a[0] < a[1] <= max(values)


def test_bootstrap_matches_the_percentile_definition() -> None:
    values = np.array([1.0, 2.0, 6.0])
    rng = np.random.default_rng(9)
    means = values[rng.integers(0, 3, size=(300, 3))].mean(axis=1)
    expected = tuple(np.quantile(means, [0.025, 0.975]))
    assert stats.bootstrap_ci(values.tolist(), seed=9, samples=300) == pytest.approx(expected)


def test_bootstrap_rejects_nothing_to_resample() -> None:
    with pytest.raises(ValueError, match="no values"):
        stats.bootstrap_ci([], seed=0)


def test_time_to_target_reached() -> None:
    t = stats.time_to_target([0.5, 0.95, 0.97], [1.5, 3.0, 4.5], 0.95)
    assert t == stats.TimeToTarget(reached=True, epochs=2, seconds=3.0)


def test_time_to_target_not_reached_counts_the_whole_budget() -> None:
    t = stats.time_to_target([0.5, 0.9, None, 0.94], [1.0, 2.0, 3.0, 4.25], 0.95)
    assert t == stats.TimeToTarget(reached=False, epochs=4, seconds=4.25)


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
