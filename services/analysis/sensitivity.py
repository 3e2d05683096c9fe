"""DeepOBS-style learning-rate sensitivity: a validation metric against the learning
rate, one curve per group (optimizer), the seeds at each rate summarised.

A run's learning rate is its config value at `lr_key` (default `optimizer.lr`); when
that is null or absent and the key is the default one, config.json's `effective.lr`
(what the optimizer actually used, e.g. its registered default).

A run that diverged at a rate is a point of the curve like any other (at chance
accuracy, or an infinite final loss: compare.accuracy_of), and each point says how
many of its runs diverged: "diverges at 0.5" is what the curve is for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runstore import Run, Skipped, outcome
from services.analysis.compare import Groups, accuracy_of
from services.analysis.errors import InvalidRequest
from services.analysis.options import (
    DEFAULT_LR_KEY,
    DEFAULT_SENSITIVITY_METRIC,
    SENSITIVITY_METRICS,
)


@dataclass(frozen=True)
class SensitivityPoint:
    """The runs of one group at one learning rate."""

    lr: float
    n: int
    mean: float
    std: float | None  # sample std; None for one run (or a non-finite value)
    low: float  # the lowest run (the band)
    high: float  # the highest run
    run_ids: tuple[str, ...]
    diverged: int = 0  # of the n runs, those whose loss became non-finite


@dataclass(frozen=True)
class SensitivityCurve:
    """One group's metric against the learning rate (ascending), and its best rate."""

    name: str
    points: tuple[SensitivityPoint, ...]
    best_lr: float
    best_mean: float


@dataclass(frozen=True)
class Sensitivity:
    """The answer to LearningRateSensitivity and `stride compare --sensitivity`."""

    experiment: str
    group_by: str
    metric: str
    lr_key: str
    curves: tuple[SensitivityCurve, ...]
    skipped: tuple[Skipped, ...]


def learning_rate(run: Run, lr_key: str = DEFAULT_LR_KEY) -> float | None:
    """The run's learning rate (see the module doc), or None when it has none."""
    value = run.value(lr_key)
    if (value is None or not run.has(lr_key)) and lr_key == DEFAULT_LR_KEY and run.record:
        value = run.record.effective.get("lr")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def run_metric(run: Run, metric: str) -> float | None:
    """A run's value of a sensitivity metric (None when it has none): an accuracy as
    every analysis counts it (compare.accuracy_of), the final validation loss as the
    last epoch wrote it, infinite for a diverged run."""
    if metric != "final_val_loss":
        return accuracy_of(run, metric)
    if outcome(run) == "diverged":
        return math.inf
    return run.epochs[-1].val_loss if run.epochs else None


def sensitivity(
    groups: Groups, *, metric: str = DEFAULT_SENSITIVITY_METRIC, lr_key: str = DEFAULT_LR_KEY
) -> Sensitivity:
    """Per group, the metric's mean, std and min..max over the runs at each learning rate."""
    if metric not in SENSITIVITY_METRICS:
        raise InvalidRequest(
            f"sensitivity metric {metric!r} unknown; allowed: {', '.join(SENSITIVITY_METRICS)}"
        )
    if lr_key in [k.strip() for k in groups.group_by.split(",")]:
        raise InvalidRequest(
            f"runs are grouped by the learning rate {lr_key!r}: group by the optimizer "
            "(e.g. optimizer.name) to draw one curve per optimizer"
        )
    skipped = list(groups.skipped)
    by_group: dict[str, dict[float, list[tuple[Run, float]]]] = {}
    for name, runs in groups.runs.items():
        for run in runs:
            lr = learning_rate(run, lr_key)
            value = run_metric(run, metric)
            if lr is None or not (math.isfinite(lr) and lr > 0):
                why = "no learning rate" if lr is None else f"learning rate {lr} is not positive"
                skipped.append(Skipped(run.experiment, run.run_id, f"{why} at {lr_key!r}"))
            elif value is None or math.isnan(value):
                skipped.append(Skipped(run.experiment, run.run_id, f"no {metric}"))
            else:
                by_group.setdefault(name, {}).setdefault(lr, []).append((run, value))
    if not by_group:
        raise InvalidRequest(
            f"no run of {groups.experiment!r} has a learning rate at {lr_key!r}"
            + (" (nor effective.lr in config.json)" if lr_key == DEFAULT_LR_KEY else "")
            + f" and a {metric}: a sensitivity curve needs runs at several learning rates"
        )
    if all(len(rates) < 2 for rates in by_group.values()):
        every = sorted({lr for r in by_group.values() for lr in r})
        raise InvalidRequest(
            f"the runs of {groups.experiment!r} have no learning-rate axis: every group has "
            f"one rate at {lr_key!r} ({', '.join(f'{r:g}' for r in every)}); sweep it, "
            f"e.g. --grid {lr_key}=0.001,0.01,0.1"
        )
    lower = SENSITIVITY_METRICS[metric]
    curves = []
    for name, rates in by_group.items():
        points = tuple(_point(lr, rates[lr]) for lr in sorted(rates))
        best = (min if lower else max)(points, key=lambda p: p.mean)
        curves.append(SensitivityCurve(name, points, best.lr, best.mean))
    return Sensitivity(
        groups.experiment, groups.group_by, metric, lr_key, tuple(curves), tuple(skipped)
    )


def _point(lr: float, runs: Sequence[tuple[Run, float]]) -> SensitivityPoint:
    values = [v for _, v in runs]
    finite = all(math.isfinite(v) for v in values)
    return SensitivityPoint(
        lr=lr,
        n=len(values),
        mean=float(np.mean(values)),
        std=float(np.std(values, ddof=1)) if len(values) > 1 and finite else None,
        low=min(values),
        high=max(values),
        run_ids=tuple(r.run_id for r, _ in runs),
        diverged=sum(outcome(r) == "diverged" for r, _ in runs),
    )
