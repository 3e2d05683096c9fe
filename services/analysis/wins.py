"""The win-probability matrix: P(a run of group A beats a run of group B) on a chosen
metric, for every ordered pair of groups, paired by seed where the groups allow it
(stats.win_probability). Every counted run plays, a diverged one at chance accuracy
and a run that missed the target at its budget (compare.run_result)."""

from __future__ import annotations

from dataclasses import dataclass

from runstore import Skipped
from services.analysis import stats
from services.analysis.compare import Groups, auc_horizon, run_result
from services.analysis.errors import InvalidRequest
from services.analysis.options import DEFAULT_RANK_BY, DEFAULT_TARGET, RANK_METRICS


@dataclass(frozen=True)
class WinMatrix:
    """The answer to WinMatrix and `stride compare --win-metric`."""

    experiment: str
    group_by: str
    metric: str
    target: float
    groups: tuple[str, ...]  # rows and columns, by name
    cells: tuple[stats.WinProbability, ...]  # row-major, every a != b
    pairing: str  # "paired by seed", "all pairs" or "mixed": how the cells were paired
    skipped: tuple[Skipped, ...]


def win_matrix(
    groups: Groups, *, metric: str = DEFAULT_RANK_BY, target: float = DEFAULT_TARGET
) -> WinMatrix:
    """P(A beats B) on `metric` (a rank metric; time metrics use `target`)."""
    if metric not in RANK_METRICS:
        raise InvalidRequest(f"win metric {metric!r} unknown; allowed: {', '.join(RANK_METRICS)}")
    if not 0.0 < target <= 1.0:
        raise InvalidRequest(f"target accuracy {target} is not in (0, 1]")
    every = [r for runs in groups.runs.values() for r in runs]
    auc_epochs = auc_horizon(every)
    longest = max(len(r.epochs) for r in every)
    scores = {
        name: [(r.seed, run_result(r, target, auc_epochs, longest).metric(metric)) for r in runs]
        for name, runs in groups.runs.items()
    }
    names = tuple(groups.runs)
    lower = RANK_METRICS[metric]
    cells = tuple(
        stats.win_probability(a, scores[a], b, scores[b], lower_is_better=lower)
        for a in names
        for b in names
        if a != b
    )
    kinds = {c.paired for c in cells if c.pairs}
    pairing = "mixed" if len(kinds) > 1 else "paired by seed" if kinds == {True} else "all pairs"
    return WinMatrix(
        groups.experiment, groups.group_by, metric, target, names, cells, pairing, groups.skipped
    )
