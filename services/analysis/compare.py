"""Compare groups of runs: the domain behind CompareRuns, GradientFlow and `stride compare`.

`select` turns a request (an experiment, a config key or explicit run ids, filters)
into named groups of runs plus the runs it left out and why. `compare` and
`gradient_flow` compute the numbers from those groups; the servicer and the
command line only format them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from runstore import Run, RunStore, Skipped, check_read_name
from services.analysis import stats
from services.analysis.errors import InvalidRequest, NoRuns
from services.analysis.layers import LayerFlow, layer_series, weight_layers
from services.analysis.options import (
    DEFAULT_GROUP_BY,
    DEFAULT_RANK_BY,
    DEFAULT_TARGET,
    RANK_METRICS,
)
from services.analysis.series import EpochSeries, epoch_series
from services.analysis.store import select_runs

MAX_GROUPS = 256  # a comparison's pairwise table has groups x (groups - 1) rows
MAX_BOOTSTRAP_DRAWS = 200_000_000  # resampled values per call: about a second of numpy
STATS_PER_GROUP = 12  # the intervals `compare` computes for each group (GroupStats)
# Runs a comparison counts by default. A run a sweep's scheduler stopped is a finished
# trial that did not reach what it did not reach: leaving it out would keep only the
# trials that looked good.
FINISHED = ("completed", "stopped")


@dataclass(frozen=True)
class Selection:
    """What to compare: one experiment, grouped by a config key or by explicit run ids."""

    experiment: str
    group_by: str = DEFAULT_GROUP_BY  # a dotted config key, or several joined by ","
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)  # name -> run ids
    where: Sequence[str] = ()  # KEY=VALUE filters on the config
    include_unfinished: bool = False  # also running and failed runs (stopped ones count always)


@dataclass(frozen=True)
class Groups:
    """Runs by group name (sorted names) and the runs left out, with the reason."""

    experiment: str
    group_by: str
    runs: Mapping[str, tuple[Run, ...]]
    skipped: tuple[Skipped, ...]


def select(store: RunStore, selection: Selection) -> Groups:
    """Read an experiment and split its runs into groups; NoRuns when none is left."""
    check_read_name("experiment", selection.experiment)
    scan = store.scan(selection.experiment)
    skipped = list(scan.malformed)
    runs = select_runs(scan.runs, where=selection.where)
    if not selection.include_unfinished:
        for run in runs:
            if run.status not in FINISHED:
                why = f": {run.summary.reason}" if run.summary and run.summary.reason else ""
                skipped.append(Skipped(run.experiment, run.run_id, f"{run.status}{why}"))
        runs = [r for r in runs if r.status in FINISHED]
    runs = [r for r in runs if _usable(r, skipped)]
    if selection.groups:
        grouped = _explicit_groups(runs, selection.groups, selection.experiment)
        group_by = "run ids"
    else:
        keys = [k.strip() for k in selection.group_by.split(",")]
        for key in keys:
            if not key or (runs and not any(r.has(key) for r in runs)):
                known = ", ".join(_keys(runs[0].config)[:20]) if runs else ""
                raise InvalidRequest(
                    f"no run of {selection.experiment!r} has config key {key!r}; "
                    f"keys of the first run: {known}"
                )
        grouped = {}
        for run in runs:
            # several keys: one group per combination, labelled "v1, v2"
            grouped.setdefault(", ".join(run.label(k) for k in keys), []).append(run)
        group_by = selection.group_by
    if len(grouped) > MAX_GROUPS:
        raise InvalidRequest(
            f"grouping by {group_by!r} makes {len(grouped)} groups; at most {MAX_GROUPS} "
            "are compared at once (their pairwise table grows with the square): group by "
            "fewer keys or narrow the runs with where"
        )
    if not grouped:
        reasons = "; ".join(f"{s.run_id}: {s.reason}" for s in skipped[:5])
        raise NoRuns(
            f"no run of experiment {selection.experiment!r} to compare"
            + (f" (left out: {reasons})" if reasons else "")
        )
    return Groups(
        selection.experiment,
        group_by,
        {name: tuple(grouped[name]) for name in sorted(grouped)},
        tuple(skipped),
    )


def _usable(run: Run, skipped: list[Skipped]) -> bool:
    if not run.epochs:
        skipped.append(Skipped(run.experiment, run.run_id, f"{run.status}: no epoch written"))
        return False
    return True


def _explicit_groups(
    runs: Sequence[Run], groups: Mapping[str, Sequence[str]], experiment: str
) -> dict[str, list[Run]]:
    by_id = {r.run_id: r for r in runs}
    out: dict[str, list[Run]] = {}
    for name, ids in groups.items():
        if not ids:
            raise InvalidRequest(f"group {name!r} names no run")
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise InvalidRequest(
                f"group {name!r}: run {missing[0]!r} is not a comparable run of {experiment!r} "
                "(absent, malformed, filtered out or unfinished)"
            )
        out[name] = [by_id[i] for i in ids]
    return out


def _keys(node: Mapping[str, object], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for k, v in node.items():
        if isinstance(v, Mapping):
            keys.extend(_keys(v, f"{prefix}{k}."))
        else:
            keys.append(f"{prefix}{k}")
    return keys


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
    bootstrap_seed: int
    bootstrap_samples: int
    groups: tuple[GroupStats, ...]  # best first
    ranking: tuple[str, ...]
    pairwise: tuple[stats.WinProbability, ...]  # every ordered pair, ranking order
    skipped: tuple[Skipped, ...]


def budget_epochs(run: Run, longest: int) -> int:
    """The epochs a run was given: config `training.epochs` (else `longest`, the longest
    run compared), never fewer than it ran."""
    planned = run.value("training.epochs")
    if not isinstance(planned, int) or isinstance(planned, bool) or planned < 1:
        planned = longest
    return max(planned, len(run.epochs))


def time_to_target(run: Run, target: float, longest: int) -> stats.TimeToTarget:
    """When the run first reached the target accuracy. A run that missed it counts as
    its budget; a *stopped* run that missed it counts as the budget it was given (config
    `training.epochs`), with seconds at its own pace (elapsed / epochs run x budget), so
    that stopping a hopeless trial never makes it look fast."""
    acc = [e.val_accuracy for e in run.epochs]
    ttt = stats.time_to_target(acc, [e.elapsed_seconds for e in run.epochs], target)
    if ttt.reached or run.status != "stopped":
        return ttt
    budget = budget_epochs(run, longest)
    seconds = None if ttt.seconds is None else ttt.seconds / len(run.epochs) * budget
    return stats.TimeToTarget(False, budget, seconds)


def run_result(run: Run, target: float, auc_epochs: int, longest: int = 0) -> RunResult:
    """The numbers of one run (definitions in docs/analysis.md)."""
    acc = [e.val_accuracy for e in run.epochs]
    known = [a for a in acc if a is not None]
    ttt = time_to_target(run, target, longest or len(run.epochs))
    ips = [e.images_per_second for e in run.epochs if e.images_per_second is not None]
    wall = run.summary.wall_seconds if run.summary else None
    last = run.epochs[-1]
    if wall is None:
        wall = last.elapsed_seconds
    return RunResult(
        run_id=run.run_id,
        seed=run.seed,
        status=run.status,
        epochs=len(run.epochs),
        final_val_accuracy=acc[-1],
        best_val_accuracy=max(known) if known else None,
        test_accuracy=run.summary.test_accuracy if run.summary else None,
        reached_target=ttt.reached,
        epochs_to_target=ttt.epochs,
        seconds_to_target=ttt.seconds,
        auc_val_loss=stats.auc_trapezoid([e.val_loss for e in run.epochs], auc_epochs),
        wall_seconds=wall,
        images_per_second=float(np.mean(ips)) if ips else None,
        accuracy_gap=_minus(last.train_accuracy, last.val_accuracy),
        loss_gap=_minus(last.val_loss, last.train_loss),
        final_weight_norm=last.weight_norm,
    )


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def compare(
    groups: Groups,
    *,
    target: float = DEFAULT_TARGET,
    rank_by: str = DEFAULT_RANK_BY,
    bootstrap_seed: int = 0,
    bootstrap_samples: int = stats.DEFAULT_BOOTSTRAP_SAMPLES,
) -> Comparison:
    """Statistics per group, a ranking on `rank_by`, and P(A beats B) for every pair."""
    if rank_by not in RANK_METRICS:
        raise InvalidRequest(f"rank_by {rank_by!r} unknown; allowed: {', '.join(RANK_METRICS)}")
    if not 0.0 < target <= 1.0:
        raise InvalidRequest(f"target accuracy {target} is not in (0, 1]")
    if bootstrap_samples < 1 or bootstrap_samples > 1_000_000:
        raise InvalidRequest(f"bootstrap samples {bootstrap_samples} not in 1..1000000")
    # Each of a group's STATS intervals draws samples x runs values: bound the whole up front.
    resampled = sum(len(r) for r in groups.runs.values() if len(r) > 1)
    draws = STATS_PER_GROUP * bootstrap_samples * resampled
    if draws > MAX_BOOTSTRAP_DRAWS:
        most = max(1, MAX_BOOTSTRAP_DRAWS // max(1, STATS_PER_GROUP * resampled))
        raise InvalidRequest(
            f"{bootstrap_samples} bootstrap samples over {resampled} runs would draw {draws:,} "
            f"values; at most {MAX_BOOTSTRAP_DRAWS:,} per call: use at most {most} samples"
        )
    # AUC over the epochs every run has, so that early-stopped runs compare fairly.
    auc_epochs = min(len(r.epochs) for runs in groups.runs.values() for r in runs)
    longest = max(len(r.epochs) for runs in groups.runs.values() for r in runs)

    def describe(values: Sequence[float | None]) -> stats.Stat:
        return stats.describe(values, seed=bootstrap_seed, samples=bootstrap_samples)

    by_name: dict[str, GroupStats] = {}
    for name, runs in groups.runs.items():
        results = tuple(run_result(r, target, auc_epochs, longest) for r in runs)
        by_name[name] = GroupStats(
            name=name,
            runs=results,
            final_val_accuracy=describe([r.final_val_accuracy for r in results]),
            best_val_accuracy=describe([r.best_val_accuracy for r in results]),
            test_accuracy=describe([r.test_accuracy for r in results]),
            epochs_to_target=describe([r.epochs_to_target for r in results]),
            seconds_to_target=describe([r.seconds_to_target for r in results]),
            reached_target=sum(r.reached_target for r in results),
            auc_val_loss=describe([r.auc_val_loss for r in results]),
            wall_seconds=describe([r.wall_seconds for r in results]),
            images_per_second=describe([r.images_per_second for r in results]),
            epochs=describe([r.epochs for r in results]),
            accuracy_gap=describe([r.accuracy_gap for r in results]),
            loss_gap=describe([r.loss_gap for r in results]),
            final_weight_norm=describe([r.final_weight_norm for r in results]),
            weight_norm=epoch_series(runs, "weight_norm"),
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
        bootstrap_seed=bootstrap_seed,
        bootstrap_samples=bootstrap_samples,
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
