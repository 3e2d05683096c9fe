"""A per-epoch value of a group's runs as one curve: mean, std and min..max band.

The figure's curves (plots.band) and the comparison's weight-norm series
(GroupStats.weight_norm) share this definition, so what CompareRuns answers is what
the panel draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runstore import Run


@dataclass(frozen=True)
class EpochSeries:
    """One value per epoch over a group's runs; each entry NaN where no run that reached
    the epoch has a finite value there (std also where fewer than two do). Empty when
    no run recorded the value at all."""

    epochs: tuple[int, ...] = ()  # 1, 2, ..., the longest run's epoch count
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()  # sample std (divisor n - 1)
    low: tuple[float, ...] = ()  # the lowest run
    high: tuple[float, ...] = ()  # the highest run


def epoch_series(runs: Sequence[Run], field: str) -> EpochSeries:
    """`field` of metrics.jsonl (an EpochRecord number) per epoch over `runs`: at each
    epoch the runs that reached it and have a finite value there count."""
    n = max((len(r.epochs) for r in runs), default=0)
    columns: list[list[float]] = [[] for _ in range(n)]
    for run in runs:
        for i, epoch in enumerate(run.epochs):
            value = getattr(epoch, field)
            if value is not None and math.isfinite(value):
                columns[i].append(float(value))
    if not any(columns):
        return EpochSeries()
    nan = math.nan
    return EpochSeries(
        epochs=tuple(range(1, n + 1)),
        mean=tuple(float(np.mean(v)) if v else nan for v in columns),
        std=tuple(float(np.std(v, ddof=1)) if len(v) > 1 else nan for v in columns),
        low=tuple(min(v) if v else nan for v in columns),
        high=tuple(max(v) if v else nan for v in columns),
    )
