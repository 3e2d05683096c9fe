"""How much tuning a group needs: the expected best validation metric after k trials of
a random search, from the trials of a sweep (each run of the group is one trial).

E[best of k] is the unbiased estimate over the trials as observed (stats.expected_max,
Dodge et al. 2021). A trial that diverged is a trial of the search like any other: it
scores what compare.accuracy_of gives it (chance accuracy for its final and test
accuracy, the best epoch it wrote for the best). No interval is given: the spread of a
maximum over a few trials has no interval with known coverage at these counts, and a
band that claims one would be false (docs/analysis.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from runstore import Skipped, outcome
from services.analysis import stats
from services.analysis.compare import Groups, accuracy_of
from services.analysis.errors import InvalidRequest
from services.analysis.options import DEFAULT_EXPECTED_BEST_METRIC, EXPECTED_BEST_METRICS

MAX_WEIGHED = 100_000_000  # trials x k summed over groups: about a second of numpy


@dataclass(frozen=True)
class ExpectedBestCurve:
    """One group's expected best value after k = 1..max_k trials."""

    name: str
    trials: int  # runs with the metric
    ks: tuple[int, ...]
    mean: tuple[float, ...]
    diverged: int = 0  # of the trials, those whose loss became non-finite


@dataclass(frozen=True)
class ExpectedBest:
    """The answer to ExpectedBest and `stride compare --expected-best`."""

    experiment: str
    group_by: str
    metric: str
    curves: tuple[ExpectedBestCurve, ...]
    skipped: tuple[Skipped, ...]


def expected_best(
    groups: Groups, *, metric: str = DEFAULT_EXPECTED_BEST_METRIC, k: int = 0
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
    skipped = list(groups.skipped)
    trials: dict[str, list[float]] = {}
    diverged: dict[str, int] = {}
    for name, runs in groups.runs.items():
        values = trials.setdefault(name, [])
        diverged[name] = 0
        for run in runs:
            value = accuracy_of(run, metric)
            if value is None:
                skipped.append(Skipped(run.experiment, run.run_id, f"no {metric}"))
            else:
                values.append(value)
                diverged[name] += outcome(run) == "diverged"
    for name, values in trials.items():
        if not values:
            raise InvalidRequest(f"group {name!r} has no trial with a {metric}")
        if k > len(values):
            raise InvalidRequest(
                f"k {k} is larger than the {len(values)} trials of group {name!r}: "
                f"ask for k <= {min(len(v) for v in trials.values())}, or run more trials"
            )
    weighed = sum(len(v) * (k or len(v)) for v in trials.values())
    if weighed > MAX_WEIGHED:
        raise InvalidRequest(
            f"trials x k of every group would weigh {weighed:,} values; at most "
            f"{MAX_WEIGHED:,} per call: ask for a smaller k"
        )
    curves = []
    for name, values in trials.items():
        top = k or len(values)
        curves.append(
            ExpectedBestCurve(
                name,
                len(values),
                tuple(range(1, top + 1)),
                tuple(stats.expected_max_curve(values, top)),
                diverged[name],
            )
        )
    return ExpectedBest(groups.experiment, groups.group_by, metric, tuple(curves), tuple(skipped))
