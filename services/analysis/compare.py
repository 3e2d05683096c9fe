"""Compare groups of runs: the domain behind CompareRuns, GradientFlow and `stride compare`.

`select` (services.analysis.selection) turns a request (an experiment, a config key
or explicit run ids, filters) into named groups of runs plus the runs it left out and
why. `compare` and `gradient_flow` compute the numbers from those groups; the
servicer and the command line only format them.

Every run that counts is a result, however it ended: a run that missed the target
counts its budget, and a diverged run counts as the model it left (chance accuracy),
never as a gap in the data (docs/analysis.md, "Runs that fail").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from runstore import Run, Skipped, outcome
from services.analysis import stats
from services.analysis.errors import InvalidRequest, NoRuns
from services.analysis.layers import LayerFlow, layer_series, weight_layers
from services.analysis.options import (
    DEFAULT_GROUP_BY,
    DEFAULT_RANK_BY,
    DEFAULT_TARGET,
    RANK_METRICS,
)
from services.analysis.selection import (
    MAX_GROUPS,
    Groups,
    Selection,
    left_out_counts,
    select,
    select_experiments,
)
from services.analysis.series import EpochSeries, epoch_series

__all__ = [
    "DEFAULT_GROUP_BY",
    "DEFAULT_RANK_BY",
    "DEFAULT_TARGET",
    "MAX_GROUPS",
    "RANK_METRICS",
    "Groups",
    "InvalidRequest",
    "NoRuns",
    "Selection",
    "left_out_counts",
    "select",
    "select_experiments",
]


def chance_accuracy(run: Run) -> float:
    """The accuracy of a model that learned nothing, what a diverged run's final model
    scores: 1 / the number of classes config.json records, else 0 (the worst accuracy)
    when it records none."""
    classes = run.record.data.get("num_classes") if run.record is not None else None
    if isinstance(classes, int) and not isinstance(classes, bool) and classes >= 2:
        return 1.0 / classes
    return 0.0


def accuracy_of(run: Run, metric: str) -> float | None:
    """A run's final_val_accuracy, best_val_accuracy or test_accuracy, as every analysis
    counts it: a diverged run's final and test accuracy are `chance_accuracy` (its
    weights are not finite), its best the best epoch it wrote (chance when none)."""
    values = [e.val_accuracy for e in run.epochs]
    known = [v for v in values if v is not None and not math.isnan(v)]
    diverged = outcome(run) == "diverged"
    if metric == "best_val_accuracy":
        if known:
            return max(known)
        return chance_accuracy(run) if diverged else None
    if diverged:
        return chance_accuracy(run)
    if metric == "final_val_accuracy":
        return values[-1] if values else None
    if metric == "test_accuracy":
        return run.summary.test_accuracy if run.summary else None
    raise ValueError(f"{metric!r} is not an accuracy of a run")


def parameters(run: Run) -> int | None:
    """Trainable parameters: the sum of config.json's layer table (None without one)."""
    if run.record is None or not run.record.layers:
        return None
    return sum(int(x.get("params", 0) or 0) for x in run.record.layers)


@dataclass(frozen=True)
class RunResult:
    """The per-run numbers a group's statistics are made of."""

    run_id: str
    seed: int | None
    status: str
    epochs: int
    final_val_accuracy: float | None
    best_val_accuracy: float | None
    test_accuracy: float | None
    reached_target: bool
    epochs_to_target: int
    seconds_to_target: float | None
    auc_val_loss: float | None
    wall_seconds: float | None
    images_per_second: float | None
    accuracy_gap: float | None  # train - val accuracy at the last epoch
    loss_gap: float | None  # val - train loss at the last epoch
    final_weight_norm: float | None  # weight_norm at the last epoch (None: not recorded)
    outcome: str = ""  # completed, stopped, diverged (failed, running: when asked for)
    budget_epochs: int = 0  # training.epochs: what a run that missed the target counts
    parameters: int | None = None  # trainable parameters (config.json's layer table)

    def metric(self, name: str) -> float | None:
        """The value of a rank metric for this run."""
        value = getattr(self, name)
        return None if value is None else float(value)


@dataclass(frozen=True)
class GroupStats:
    """A group's statistics over its runs (seeds)."""

    name: str
    runs: tuple[RunResult, ...]
    final_val_accuracy: stats.Stat
    best_val_accuracy: stats.Stat
    test_accuracy: stats.Stat
    epochs_to_target: stats.Stat
    seconds_to_target: stats.Stat
    reached_target: int  # how many runs reached it
    auc_val_loss: stats.Stat
    wall_seconds: stats.Stat
    images_per_second: stats.Stat
    epochs: stats.Stat
    accuracy_gap: stats.Stat
    loss_gap: stats.Stat
    final_weight_norm: stats.Stat
    weight_norm: EpochSeries  # per epoch over the runs; empty when no run recorded it
    diverged: int = 0  # runs whose loss became non-finite (counted, at chance accuracy)
    stopped: int = 0  # runs a sweep's scheduler stopped (counted)

    def stat(self, metric: str) -> stats.Stat:
        """The Stat of a rank metric."""
        value = getattr(self, metric)
        assert isinstance(value, stats.Stat)
        return value


@dataclass(frozen=True)
class Comparison:
    """The answer to CompareRuns and `stride compare`."""

    experiment: str
    group_by: str
    target: float
    rank_by: str
    auc_epochs: int  # the horizon every run's AUC is taken over
    groups: tuple[GroupStats, ...]  # best first
    ranking: tuple[str, ...]
    pairwise: tuple[stats.WinProbability, ...]  # every ordered pair, ranking order
    skipped: tuple[Skipped, ...]
    interval: str = stats.STUDENT_T  # how each Stat's ci_low..ci_high is made
    confidence: float = stats.CONFIDENCE


def budget_epochs(run: Run, longest: int) -> int:
    """The epochs a run was given: config `training.epochs` (else `longest`, the longest
    run compared), never fewer than it ran."""
    planned = run.value("training.epochs")
    if not isinstance(planned, int) or isinstance(planned, bool) or planned < 1:
        planned = longest
    return max(planned, len(run.epochs))


def time_to_target(run: Run, target: float, longest: int) -> stats.TimeToTarget:
    """When the run first reached the target accuracy. Every run that did not reach it
    counts as its budget (`budget_epochs`), whatever ended it (its epochs, early
    stopping, a scheduler, divergence), with seconds at its own pace
    (stats.time_to_target): giving up early never makes a run look fast."""
    acc = [e.val_accuracy for e in run.epochs]
    elapsed = [e.elapsed_seconds for e in run.epochs]
    return stats.time_to_target(acc, elapsed, target, budget_epochs(run, longest))


def auc_horizon(runs: Sequence[Run]) -> int:
    """The epochs every run's AUC is taken over: the shortest run that did not diverge
    (a diverged run's loss is infinite from its divergence on; all runs when all did)."""
    lengths = [len(r.epochs) for r in runs if outcome(r) != "diverged"]
    return min(lengths or [len(r.epochs) for r in runs])


def run_result(run: Run, target: float, auc_epochs: int, longest: int = 0) -> RunResult:
    """The numbers of one run (definitions in docs/analysis.md)."""
    ended = outcome(run)
    diverged = ended == "diverged"
    longest = longest or len(run.epochs)
    ttt = time_to_target(run, target, longest)
    ips = [e.images_per_second for e in run.epochs if e.images_per_second is not None]
    if len(ips) > 1:
        ips = ips[1:]  # the first epoch includes warm-up (data loading, first allocations)
    last = run.epochs[-1] if run.epochs else None
    wall = run.summary.wall_seconds if run.summary else None
    if wall is None and last is not None:
        wall = last.elapsed_seconds
    auc = stats.auc_trapezoid([e.val_loss for e in run.epochs], auc_epochs)
    if diverged and len(run.epochs) < auc_epochs:
        auc = math.inf  # its loss became non-finite inside the horizon
    return RunResult(
        run_id=run.run_id,
        seed=run.seed,
        status=run.status,
        epochs=len(run.epochs),
        final_val_accuracy=accuracy_of(run, "final_val_accuracy"),
        best_val_accuracy=accuracy_of(run, "best_val_accuracy"),
        test_accuracy=accuracy_of(run, "test_accuracy"),
        reached_target=ttt.reached,
        epochs_to_target=ttt.epochs,
        seconds_to_target=ttt.seconds,
        auc_val_loss=auc,
        wall_seconds=wall,
        images_per_second=float(np.mean(ips)) if ips else None,
        accuracy_gap=None
        if diverged or last is None
        else _minus(last.train_accuracy, last.val_accuracy),
        loss_gap=None if diverged or last is None else _minus(last.val_loss, last.train_loss),
        final_weight_norm=None if diverged or last is None else last.weight_norm,
        outcome=ended,
        budget_epochs=budget_epochs(run, longest),
        parameters=parameters(run),
    )


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def compare(
    groups: Groups, *, target: float = DEFAULT_TARGET, rank_by: str = DEFAULT_RANK_BY
) -> Comparison:
    """Statistics per group, a ranking on `rank_by`, and P(A beats B) for every pair."""
    if rank_by not in RANK_METRICS:
        raise InvalidRequest(f"rank_by {rank_by!r} unknown; allowed: {', '.join(RANK_METRICS)}")
    if not 0.0 < target <= 1.0:
        raise InvalidRequest(f"target accuracy {target} is not in (0, 1]")
    every = [r for runs in groups.runs.values() for r in runs]
    # AUC over the epochs every run has, so that early-stopped runs compare fairly.
    auc_epochs = auc_horizon(every)
    longest = max(len(r.epochs) for r in every)

    # Each interval is cut to what its metric can be: times, counts, AUC, speed and the
    # weight norm >= 0; accuracies in 0..1; a gap may be negative.
    def describe(values: Sequence[float | None]) -> stats.Stat:
        return stats.describe(values, (0.0, math.inf))

    def accuracy(values: Sequence[float | None]) -> stats.Stat:
        return stats.describe(values, (0.0, 1.0))

    def gap(values: Sequence[float | None]) -> stats.Stat:
        return stats.describe(values)

    by_name: dict[str, GroupStats] = {}
    for name, runs in groups.runs.items():
        results = tuple(run_result(r, target, auc_epochs, longest) for r in runs)
        by_name[name] = GroupStats(
            name=name,
            runs=results,
            final_val_accuracy=accuracy([r.final_val_accuracy for r in results]),
            best_val_accuracy=accuracy([r.best_val_accuracy for r in results]),
            test_accuracy=accuracy([r.test_accuracy for r in results]),
            epochs_to_target=describe([r.epochs_to_target for r in results]),
            seconds_to_target=describe([r.seconds_to_target for r in results]),
            reached_target=sum(r.reached_target for r in results),
            auc_val_loss=describe([r.auc_val_loss for r in results]),
            wall_seconds=describe([r.wall_seconds for r in results]),
            images_per_second=describe([r.images_per_second for r in results]),
            epochs=describe([r.epochs for r in results]),
            accuracy_gap=gap([r.accuracy_gap for r in results]),
            loss_gap=gap([r.loss_gap for r in results]),
            final_weight_norm=describe([r.final_weight_norm for r in results]),
            weight_norm=epoch_series(runs, "weight_norm"),
            diverged=sum(r.outcome == "diverged" for r in results),
            stopped=sum(r.outcome == "stopped" for r in results),
        )
    lower = RANK_METRICS[rank_by]
    ranking = stats.rank(
        {n: g.stat(rank_by).mean for n, g in by_name.items()}, lower_is_better=lower
    )
    pairwise = tuple(
        stats.win_probability(
            a,
            [(r.seed, r.metric(rank_by)) for r in by_name[a].runs],
            b,
            [(r.seed, r.metric(rank_by)) for r in by_name[b].runs],
            lower_is_better=lower,
        )
        for a in ranking
        for b in ranking
        if a != b
    )
    return Comparison(
        experiment=groups.experiment,
        group_by=groups.group_by,
        target=target,
        rank_by=rank_by,
        auc_epochs=auc_epochs,
        groups=tuple(by_name[n] for n in ranking),
        ranking=tuple(ranking),
        pairwise=pairwise,
        skipped=groups.skipped,
    )


@dataclass(frozen=True)
class GroupFlow:
    """Gradient norms of every layer (input side first) over epochs, for one group."""

    name: str
    runs: int
    epochs: tuple[int, ...]
    layers: tuple[LayerFlow, ...]  # every parameterised layer, with its kind and depth
    ratio_by_epoch: tuple[float, ...]  # first weight layer's mean norm / last one's, per epoch
    ratio: float  # mean first-weight-layer norm over epochs / the last one's
    first_layer: str = ""  # the weight layers the ratio is taken between
    last_layer: str = ""

    @property
    def weight_layers(self) -> tuple[LayerFlow, ...]:
        """The conv and linear layers (the depth axis); every layer when none is known."""
        return weight_layers(self.layers) or self.layers


def gradient_flow(groups: Groups) -> tuple[GroupFlow, ...]:
    """Per group: every layer's gradient norm over epochs and the first/last ratio.

    Layers are in the depth order first met; at each epoch the mean is over the runs
    that reached that epoch. The ratio is taken between the first and the last weight
    layer (conv, linear: batch norm is left out of the depth axis), or between the first
    and last layer when no layer's kind is known. A run without grad_norms adds nothing.
    """
    out = []
    for name, runs in groups.runs.items():
        n_epochs, layers = layer_series(runs, lambda e: e.grad_norms)
        flow = GroupFlow(name, len(runs), tuple(range(1, n_epochs + 1)), layers, (), math.nan)
        depth_axis = flow.weight_layers
        if depth_axis:
            first, last = depth_axis[0], depth_axis[-1]
            flow = replace(
                flow,
                ratio_by_epoch=tuple(
                    _div(f, la) for f, la in zip(first.mean, last.mean, strict=True)
                ),
                ratio=_div(_nanmean(first.mean), _nanmean(last.mean)),
                first_layer=first.layer,
                last_layer=last.layer,
            )
        out.append(flow)
    return tuple(out)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _div(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b == 0.0:
        return math.nan
    return a / b
