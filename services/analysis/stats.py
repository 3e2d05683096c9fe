"""The statistics behind a comparison, as small pure functions (definitions: docs/analysis.md).

Nothing here knows about files or gRPC: values in, numbers out, so that every
definition is tested on values whose answer is known.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95  # of every interval Stride prints
STUDENT_T = "student_t"  # Stat.interval: the two-sided Student's t interval of the mean


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation and a confidence interval of the mean.

    `std` is None for fewer than two values, and so are `ci_low`/`ci_high` (one value
    says nothing about its spread), also where the values are not all finite.
    `interval` names the method of the interval (`STUDENT_T`), None when there is none;
    its level is `CONFIDENCE`. `mean` is None for no values.
    """

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    interval: str | None = None


def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with `df` (a positive integer) degrees of freedom.

    The finite series for integer df (Abramowitz and Stegun 26.7.3-4): with
    theta = atan(t / sqrt(df)), s = sin(theta), c = cos(theta),
    odd df: (2 / pi) (theta + s c (1 + 2/3 c^2 + 2 4/(3 5) c^4 + ... up to c^(df-3)));
    even df: s (1 + 1/2 c^2 + 1 3/(2 4) c^4 + ... up to c^(df-2)).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, not {df}")
    if t <= 0.0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        total, term = 0.0, 1.0
        if df > 1:
            total = term = 1.0
            for k in range(3, df - 1, 2):  # term k: (k - 1) / k of the one before, times c^2
                term *= c2 * (k - 1) / k
                total += term
            total *= s * math.cos(theta)
        return 2.0 / math.pi * (theta + total)
    total = term = 1.0
    for k in range(2, df - 1, 2):
        term *= c2 * (k - 1) / k
        total += term
    return s * total


@functools.lru_cache(maxsize=1024)
def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The t with P(|T| <= t) = confidence (the two-sided quantile), by bisection on
    `t_cdf_two_sided` to the last bit a double holds. Above 10^4 degrees of freedom the
    series grows long, and the normal quantile with two Cornish-Fisher terms is as
    exact (Abramowitz and Stegun 26.7.5)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is not in (0, 1)")
    if df > 10_000:
        z = _normal_critical(confidence)
        return z + (z**3 + z) / (4.0 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96.0 * df**2)
    low, high = 0.0, 1.0
    while t_cdf_two_sided(high, df) < confidence:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if mid in (low, high):
            break
        if t_cdf_two_sided(mid, df) < confidence:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def _normal_critical(confidence: float) -> float:
    """The z with P(|Z| <= z) = confidence, by bisection on erf."""
    low, high = 0.0, 40.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if math.erf(mid / math.sqrt(2.0)) < confidence:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def t_intervals(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, ...]:
    """Row-wise Student's t interval of the mean: for each row of n >= 2 values,
    mean -/+ t(n - 1) s / sqrt(n), s the sample standard deviation (divisor n - 1) and
    t(n - 1) the two-sided `confidence` quantile. Returns (mean, std, low, high) arrays.
    `describe` prints exactly this; the coverage test simulates it."""
    x = np.asarray(samples, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError("a t interval needs rows of at least two values")
    n = x.shape[1]
    mean = x.mean(axis=1)
    std = x.std(axis=1, ddof=1)
    half = t_critical(n - 1, confidence) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def describe(
    values: Sequence[float | None], bounds: tuple[float, float] = (-math.inf, math.inf)
) -> Stat:
    """Stat of the values that are not None: mean, sample std and the 95% Student's t
    interval of the mean (none for one value, or where a value is not finite: a mean
    of an infinite value is infinite, and no interval says anything about it).

    `bounds` is the range the metric can take (an accuracy 0..1, a time >= 0): the
    interval is cut to it, which drops only impossible means and so cannot lower its
    coverage."""
    x = [float(v) for v in values if v is not None]
    if not x:
        return Stat(0, None, None, None, None)
    mean = float(np.mean(x))
    if len(x) < 2:
        return Stat(1, mean, None, None, None)
    if not all(math.isfinite(v) for v in x):
        return Stat(len(x), mean, None, None, None)
    _, std, low, high = t_intervals(np.asarray([x]))
    low_cut = max(float(low[0]), bounds[0])
    high_cut = min(float(high[0]), bounds[1])
    return Stat(len(x), mean, float(std[0]), low_cut, high_cut, STUDENT_T)


@dataclass(frozen=True)
class TimeToTarget:
    """When a run first reached the target: epoch number and elapsed seconds.

    A run that never reached it has `reached=False` and counts as its budget (see
    `time_to_target`).
    """

    reached: bool
    epochs: int
    seconds: float | None


def time_to_target(
    accuracies: Sequence[float | None],
    elapsed: Sequence[float | None],
    target: float,
    budget: int | None = None,
) -> TimeToTarget:
    """First epoch (1-based) whose validation accuracy is >= target, with its elapsed
    seconds. A run that never reached it counts as its budget of epochs (`budget`,
    default the epochs it ran; never fewer than it ran), whatever ended it, and as
    that budget at its own pace in seconds: the last elapsed seconds / epochs run x
    budget (None when it ran no epoch or its last epoch has no elapsed seconds)."""
    if len(accuracies) != len(elapsed):
        raise ValueError("accuracies and elapsed seconds differ in length")
    for i, acc in enumerate(accuracies):
        if acc is not None and acc >= target:
            return TimeToTarget(True, i + 1, elapsed[i])
    ran = len(accuracies)
    epochs = max(ran, budget or 0)
    last = elapsed[-1] if elapsed else None
    seconds = None if last is None or ran == 0 else last / ran * epochs
    return TimeToTarget(False, epochs, seconds)


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
    """Dolan and More's performance profile: rho(tau), the fraction of workloads whose
    performance ratio is <= tau, at each tau."""
    r = np.asarray(ratios, dtype=float)
    if r.size == 0:
        raise ValueError("a performance profile needs at least one workload")
    return [float(np.mean(r <= tau)) for tau in taus]


def _check_profile(ratios: Sequence[float], tau_max: float) -> None:
    if not tau_max > 1.0 or not math.isfinite(tau_max):
        raise ValueError(f"tau_max must be a finite number above 1, not {tau_max}")
    if not ratios:
        raise ValueError("a performance profile needs at least one workload")


def algoperf_score(ratios: Sequence[float], tau_max: float) -> float:
    """AlgoPerf's benchmark score: the area under rho over tau (linear) from 1 to tau_max,
    divided by tau_max - 1, so 1 means the best on every workload and 0 never within
    tau_max of the best. rho is a step function, so the area is exact: a workload with
    ratio r <= tau_max adds (tau_max - r) / (tau_max - 1), one above adds 0; the score
    is the mean over workloads."""
    _check_profile(ratios, tau_max)
    span = tau_max - 1.0
    return sum((tau_max - max(r, 1.0)) / span for r in ratios if r <= tau_max) / len(ratios)


def log_tau_area(ratios: Sequence[float], tau_max: float) -> float:
    """The normalised area under rho over log(tau), tau from 1 to tau_max: not AlgoPerf's
    score, which is linear in tau; this one weighs ratios near 1 more. A workload with
    ratio r <= tau_max adds (log(tau_max) - log(r)) / log(tau_max); the mean over
    workloads."""
    _check_profile(ratios, tau_max)
    span = math.log(tau_max)
    total = sum((span - math.log(max(r, 1.0))) / span for r in ratios if r <= tau_max)
    return total / len(ratios)


def log_taus(tau_max: float, points: int) -> list[float]:
    """`points` values of tau, log-spaced from 1 to tau_max inclusive."""
    return [float(t) for t in np.geomspace(1.0, tau_max, points)]


def expected_max_weights(n: int, k: int) -> np.ndarray:
    """The weight of the i-th smallest of n values (i = 1..n) in the unbiased estimate of
    E[max of k draws]: P(the i-th smallest is the largest of k drawn without
    replacement) = C(i - 1, k - 1) / C(n, k), zero for i < k."""
    if not 1 <= k <= n:
        raise ValueError(f"k {k} is not in 1..{n} (the trials)")
    # In logs, so that C(n, k) of thousands of trials neither overflows nor underflows:
    # log w(k) = -log C(n, k), and w(i + 1) / w(i) = i / (i - k + 1).
    log_first = math.lgamma(k + 1) + math.lgamma(n - k + 1) - math.lgamma(n + 1)
    i = np.arange(k, n, dtype=float)
    logs = log_first + np.concatenate(([0.0], np.cumsum(np.log(i / (i - k + 1)))))
    return np.concatenate((np.zeros(k - 1), np.exp(logs)))


def expected_max(values: Sequence[float], k: int) -> float:
    """Unbiased estimate of the expected maximum of k independent draws from the
    distribution the n values were drawn from (Dodge et al. 2021, "Expected Validation
    Performance and Estimation of a Random Variable's Maximum"): the mean, over every
    subset of k of the n values, of the subset's maximum. With v(1) <= ... <= v(n),
    sum over i of v(i) C(i - 1, k - 1) / C(n, k). k = 1 gives the mean; k = n the
    largest value observed. A NaN value makes it NaN."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0:
        raise ValueError("expected maximum of no trials")
    if np.isnan(v).any():
        return math.nan
    weights = expected_max_weights(v.size, k)
    finite = weights > 0
    # a value that cannot be the largest of k weighs 0 (and -inf x 0 would be NaN)
    return float(np.sum(v[finite] * weights[finite]))


def expected_max_curve(values: Sequence[float], max_k: int) -> list[float]:
    """`expected_max` for k = 1..max_k."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("expected maximum of no trials")
    if not 1 <= max_k <= x.size:
        raise ValueError(f"k {max_k} is not in 1..{x.size} (the trials)")
    return [expected_max(values, k) for k in range(1, max_k + 1)]
