"""How much tuning a group needs: the expected best validation metric after k trials of
a random search, from the trials of a sweep (each run of the group is one trial).

E[best of k] is exact over the trials as observed (stats.expected_max); its band is
a percentile bootstrap over resampled sets of trials (stats.expected_max_curve).
"""

from __future__ import annotations

from dataclasses import dataclass

from runstore import Skipped
from services.analysis import stats
from services.analysis.compare import MAX_BOOTSTRAP_DRAWS, Groups
from services.analysis.errors import InvalidRequest
from services.analysis.options import DEFAULT_EXPECTED_BEST_METRIC, EXPECTED_BEST_METRICS
from services.analysis.sensitivity import run_metric


@dataclass(frozen=True)
class ExpectedBestCurve:
    """One group's expected best value after k = 1..max_k trials."""

    name: str
    trials: int  # runs with the metric
    ks: tuple[int, ...]
    mean: tuple[float, ...]
    ci_low: tuple[float, ...]  # NaN for a group of one trial
    ci_high: tuple[float, ...]


@dataclass(frozen=True)
class ExpectedBest:
    """The answer to ExpectedBest and `stride compare --expected-best`."""

    experiment: str
    group_by: str
    metric: str
    bootstrap_seed: int
    bootstrap_samples: int
    curves: tuple[ExpectedBestCurve, ...]
    skipped: tuple[Skipped, ...]


def expected_best(
    groups: Groups,
    *,
    metric: str = DEFAULT_EXPECTED_BEST_METRIC,
    k: int = 0,
    bootstrap_seed: int = 0,
    bootstrap_samples: int = stats.DEFAULT_BOOTSTRAP_SAMPLES,
) -> ExpectedBest:
    """Per group, E[best `metric` of k trials] for k = 1..k (0: each group's trial count).

    A k above a group's trial count is an error: the curve would extrapolate past
    the trials that were run.
    """
    if metric not in EXPECTED_BEST_METRICS:
        raise InvalidRequest(
            f"expected-best metric {metric!r} unknown; allowed: {', '.join(EXPECTED_BEST_METRICS)}"
        )
    if k < 0:
        raise InvalidRequest(f"k {k} is negative; give 1 or more (0: every trial)")
    if not 1 <= bootstrap_samples <= 1_000_000:
        raise InvalidRequest(f"bootstrap samples {bootstrap_samples} not in 1..1000000")
    skipped = list(groups.skipped)
    trials: dict[str, list[float]] = {}
    for name, runs in groups.runs.items():
        values = trials.setdefault(name, [])
        for run in runs:
            value = run_metric(run, metric)
            if value is None:
                skipped.append(Skipped(run.experiment, run.run_id, f"no {metric}"))
            else:
                values.append(value)
    for name, values in trials.items():
        if not values:
            raise InvalidRequest(f"group {name!r} has no trial with a {metric}")
        if k > len(values):
            raise InvalidRequest(
                f"k {k} is larger than the {len(values)} trials of group {name!r}: "
                f"ask for k <= {min(len(v) for v in trials.values())}, or run more trials"
            )
    # Each resample sorts n values and weighs them once per k: bound the work up front.
    draws = sum(bootstrap_samples * len(v) * (k or len(v)) for v in trials.values() if len(v) > 1)
    if draws > MAX_BOOTSTRAP_DRAWS:
        raise InvalidRequest(
            f"{bootstrap_samples} bootstrap samples x trials x k would weigh {draws:,} values; "
            f"at most {MAX_BOOTSTRAP_DRAWS:,} per call: use fewer samples or a smaller k"
        )
    curves = []
    for name, values in trials.items():
        curve = stats.expected_max_curve(
            values, k or len(values), seed=bootstrap_seed, samples=bootstrap_samples
        )
        curves.append(
            ExpectedBestCurve(name, len(values), curve.ks, curve.mean, curve.ci_low, curve.ci_high)
        )
    return ExpectedBest(
        groups.experiment,
        groups.group_by,
        metric,
        bootstrap_seed,
        bootstrap_samples,
        tuple(curves),
        tuple(skipped),
    )
