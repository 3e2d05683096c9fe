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


def median_time(times: Sequence[float]) -> float:
    """Median of times to a target, a run that missed it being `math.inf`.

    Infinite values sort last, so the median is finite when more than half of the runs
    reached the target (with an even count, the mean of the two middle values: infinite
    when either is).
    """
    if not times:
        return math.inf
    x = sorted(times)
    mid = len(x) // 2
    if len(x) % 2:
        return float(x[mid])
    return (x[mid - 1] + x[mid]) / 2.0


def performance_ratios(times: Mapping[str, float]) -> dict[str, float]:
    """Each group's time divided by the best (smallest) time on one workload.

    `math.inf` where a group never reached the target, and for every group when no
    group reached it (no one earns credit on that workload). A best time of zero gives
    ratio 1 to the groups that also took zero and infinity to the rest.
    """
    finite = [t for t in times.values() if math.isfinite(t)]
    if not finite:
        return {g: math.inf for g in times}
    best = min(finite)
    out = {}
    for group, t in times.items():
        if not math.isfinite(t):
            out[group] = math.inf
        elif best == 0.0:
            out[group] = 1.0 if t == 0.0 else math.inf
        else:
            out[group] = t / best
    return out


def profile_curve(ratios: Sequence[float], taus: Sequence[float]) -> list[float]:
    """rho(tau): the fraction of workloads whose performance ratio is <= tau, per tau."""
    r = np.asarray(ratios, dtype=float)
    if r.size == 0:
        raise ValueError("a performance profile needs at least one workload")
    return [float(np.mean(r <= tau)) for tau in taus]


def profile_area(ratios: Sequence[float], tau_max: float) -> float:
    """The normalised area under the profile over log(tau), tau from 1 to tau_max.

    rho is a step function, so the area is exact: a workload with ratio r contributes
    (log(tau_max) - log(r)) / log(tau_max) when r <= tau_max, else 0, and the score is
    the mean over workloads. 1 means the best group on every workload; 0 means never
    within tau_max of the best.
    """
    if not tau_max > 1.0 or not math.isfinite(tau_max):
        raise ValueError(f"tau_max must be a finite number above 1, not {tau_max}")
    if not ratios:
        raise ValueError("a performance profile needs at least one workload")
    span = math.log(tau_max)
    total = 0.0
    for r in ratios:
        if r <= tau_max:
            total += (span - math.log(max(r, 1.0))) / span
    return total / len(ratios)


def log_taus(tau_max: float, points: int) -> list[float]:
    """`points` values of tau, log-spaced from 1 to tau_max inclusive."""
    return [float(t) for t in np.geomspace(1.0, tau_max, points)]


def expected_max(values: Sequence[float], k: int) -> float:
    """Expected maximum of k draws with replacement from `values` (exact).

    With the n values sorted, v(1) <= ... <= v(n), the maximum of k draws is v(i) with
    probability (i/n)^k - ((i-1)/n)^k, so E = sum_i v(i) ((i/n)^k - ((i-1)/n)^k)
    (Dodge et al. 2019, "Show your work").
    """
    v = np.sort(np.asarray(values, dtype=float))
    return float(_expected_max_sorted(v[np.newaxis, :], k)[0])


def _expected_max_sorted(v: np.ndarray, k: int) -> np.ndarray:
    """Row-wise expected maximum of k draws; each row of `v` sorted ascending."""
    n = v.shape[1]
    i = np.arange(1, n + 1, dtype=float)
    weights = (i / n) ** k - ((i - 1) / n) ** k  # (n,)
    return np.asarray(v @ weights)


@dataclass(frozen=True)
class ExpectedMaxCurve:
    """Expected best value after k = 1..max_k trials, with a bootstrap band."""

    ks: tuple[int, ...]
    mean: tuple[float, ...]  # exact expected maximum over the trials as observed
    ci_low: tuple[float, ...]  # percentile bootstrap over resampled sets of trials
    ci_high: tuple[float, ...]


def expected_max_curve(
    values: Sequence[float],
    max_k: int,
    *,
    seed: int,
    samples: int = DEFAULT_BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
) -> ExpectedMaxCurve:
    """E[best of k trials] for k = 1..max_k; the band resamples the n trials with
    replacement `samples` times (numpy default_rng(seed)), computes each resample's
    expected maximum, and takes the (1-confidence)/2 and (1+confidence)/2 quantiles.
    Fewer than two trials give no band (NaN)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("expected maximum of no trials")
    if not 1 <= max_k <= x.size:
        raise ValueError(f"k {max_k} is not in 1..{x.size} (the trials)")
    ordered = np.sort(x)[np.newaxis, :]
    resampled = None
    if x.size > 1:
        rng = np.random.default_rng(seed)
        resampled = np.sort(x[rng.integers(0, x.size, size=(samples, x.size))], axis=1)
    alpha = (1.0 - confidence) / 2.0
    ks, mean, low, high = [], [], [], []
    for k in range(1, max_k + 1):
        ks.append(k)
        mean.append(float(_expected_max_sorted(ordered, k)[0]))
        if resampled is None:
            low.append(math.nan)
            high.append(math.nan)
        else:
            lo, hi = np.quantile(_expected_max_sorted(resampled, k), [alpha, 1.0 - alpha])
            low.append(float(lo))
            high.append(float(hi))
    return ExpectedMaxCurve(tuple(ks), tuple(mean), tuple(low), tuple(high))
