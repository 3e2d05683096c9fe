"""The statistics behind a comparison, as small pure functions (definitions: docs/analysis.md).

Nothing here knows about files or gRPC: values in, numbers out, so that every
definition is tested on values whose answer is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_BOOTSTRAP_SAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation and a bootstrap confidence interval of the mean.

    `std` is None for fewer than two values; `ci_low`/`ci_high` likewise, since
    resampling one value says nothing about its spread. `mean` is None for none.
    """

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None


def bootstrap_ci(
    values: Sequence[float],
    *,
    seed: int,
    samples: int = DEFAULT_BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample `values` with replacement
    `samples` times (numpy's default generator seeded with `seed`), take the mean of
    each resample, and return the (1-confidence)/2 and (1+confidence)/2 quantiles
    (numpy's default linear interpolation). The same seed gives the same interval.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap of no values")
    if samples < 1:
        raise ValueError(f"bootstrap samples must be positive, not {samples}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def describe(
    values: Sequence[float | None],
    *,
    seed: int = 0,
    samples: int = DEFAULT_BOOTSTRAP_SAMPLES,
) -> Stat:
    """Stat of the values that are not None (NaN stays, so a diverged run shows as NaN)."""
    x = [float(v) for v in values if v is not None]
    if not x:
        return Stat(0, None, None, None, None)
    mean = float(np.mean(x))
    if len(x) < 2:
        return Stat(1, mean, None, None, None)
    std = float(np.std(x, ddof=1))
    low, high = bootstrap_ci(x, seed=seed, samples=samples)
    return Stat(len(x), mean, std, low, high)


@dataclass(frozen=True)
class TimeToTarget:
    """When a run first reached the target: epoch number and elapsed seconds.

    A run that never reached it has `reached=False` and counts as its whole budget:
    the epochs it ran and the elapsed seconds at its last epoch.
    """

    reached: bool
    epochs: int
    seconds: float | None


def time_to_target(
    accuracies: Sequence[float | None], elapsed: Sequence[float | None], target: float
) -> TimeToTarget:
    """First epoch (1-based) whose validation accuracy is >= target, with its elapsed seconds."""
    if len(accuracies) != len(elapsed):
        raise ValueError("accuracies and elapsed seconds differ in length")
    for i, acc in enumerate(accuracies):
        if acc is not None and acc >= target:
            return TimeToTarget(True, i + 1, elapsed[i])
    last = elapsed[-1] if elapsed else None
    return TimeToTarget(False, len(accuracies), last)


def auc_trapezoid(values: Sequence[float | None], horizon: int | None = None) -> float | None:
    """Area under a per-epoch curve by the trapezoid rule over epochs 1..horizon.

    The points are (epoch, value) one epoch apart, so the area is
    sum((v[i] + v[i+1]) / 2) over consecutive epochs, in value x epochs. None when
    fewer than two epochs are in the horizon or a value in it is missing.
    """
    points = list(values[:horizon] if horizon is not None else values)
    if len(points) < 2 or any(v is None for v in points):
        return None
    y = np.asarray(points, dtype=float)
    return float(np.sum((y[:-1] + y[1:]) / 2.0))


@dataclass(frozen=True)
class WinProbability:
    """P(a run of group A beats a run of group B) on one metric.

    `paired` says whether runs were paired by seed (one comparison per common
    seed) or all |A| x |B| pairs were compared; `pairs` is how many comparisons.
    A tie counts one half.
    """

    a: str
    b: str
    probability: float | None
    pairs: int
    paired: bool


def win_probability(
    a_name: str,
    a: Sequence[tuple[int | None, float | None]],
    b_name: str,
    b: Sequence[tuple[int | None, float | None]],
    *,
    lower_is_better: bool,
) -> WinProbability:
    """P(A beats B) from (seed, score) lists.

    When both groups have each of their seeds once and share at least one seed,
    runs are paired by seed and only the common seeds count (same seed, same data
    order and initialisation, so the comparison removes that noise). Otherwise
    (no common seed, a missing seed, or a seed repeated within a group) every run
    of A is compared with every run of B. Missing or NaN scores are left out.
    """
    a_ok = [(s, v) for s, v in a if v is not None and not math.isnan(v)]
    b_ok = [(s, v) for s, v in b if v is not None and not math.isnan(v)]
    pairs: list[tuple[float, float]]
    a_seeds = _unique_seeds(a_ok)
    b_seeds = _unique_seeds(b_ok)
    common = sorted(a_seeds.keys() & b_seeds.keys()) if a_seeds and b_seeds else []
    paired = bool(common)
    if paired:
        pairs = [(a_seeds[s], b_seeds[s]) for s in common]
    else:
        pairs = [(x, y) for _, x in a_ok for _, y in b_ok]
    if not pairs:
        return WinProbability(a_name, b_name, None, 0, paired)
    score = 0.0
    for x, y in pairs:
        if x == y:
            score += 0.5
        elif (x < y) == lower_is_better:
            score += 1.0
    return WinProbability(a_name, b_name, score / len(pairs), len(pairs), paired)


def _unique_seeds(runs: Sequence[tuple[int | None, float]]) -> dict[int, float]:
    """seed -> score when every run has a seed and no seed repeats; else empty."""
    seeds = [s for s, _ in runs]
    if any(s is None for s in seeds) or len(set(seeds)) != len(seeds):
        return {}
    return {s: v for s, v in runs if s is not None}


def rank(means: Mapping[str, float | None], *, lower_is_better: bool) -> list[str]:
    """Group names from best to worst mean; missing or NaN means last, ties by name."""

    def key(name: str) -> tuple[int, float, str]:
        m = means[name]
        if m is None or math.isnan(m):
            return (1, 0.0, name)
        return (0, m if lower_is_better else -m, name)

    return sorted(means, key=key)
