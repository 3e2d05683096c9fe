"""Performance profiles (Dolan and More 2002) and AlgoPerf's score over them: how often
each group is within a factor tau of the fastest group, over several experiments
(workloads).

Per workload, a run's time is the first epoch (or its elapsed seconds) at which its
validation metric reaches the workload's target; a run that never reaches it (a
stopped or diverged run included) takes infinitely long. A group's time on a workload
is the median over its runs; its performance ratio is that time over the best
group's. rho(tau) is the fraction of workloads whose ratio is <= tau (Dolan and
More's profile); the score is AlgoPerf's, the area under rho over tau from 1 to
tau_max divided by tau_max - 1 (stats.algoperf_score). The area over log(tau) is also
given, under its own name (stats.log_tau_area).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from runstore import Run, RunStore, Skipped
from services.analysis import stats
from services.analysis.compare import MAX_GROUPS, Selection, select
from services.analysis.errors import InvalidRequest
from services.analysis.options import (
    DEFAULT_PROFILE_METRIC,
    DEFAULT_PROFILE_TIME,
    DEFAULT_TARGET,
    DEFAULT_TAU_MAX,
    DEFAULT_TAU_POINTS,
    MAX_TAU_POINTS,
    MAX_WORKLOADS,
    PROFILE_METRICS,
    PROFILE_TIMES,
)


@dataclass(frozen=True)
class Workload:
    """One experiment of a profile and its target (None: the profile's default)."""

    experiment: str
    target: float | None = None


@dataclass(frozen=True)
class GroupTime:
    """A group's time to target on one workload."""

    group: str
    runs: int  # 0: the group has no run in this workload (counts as never reaching)
    reached: int  # runs that reached the target
    time: float  # median over runs; inf when it did not reach it
    ratio: float  # time / the best group's time; inf when not reached


@dataclass(frozen=True)
class WorkloadResult:
    """One workload's target and every group's time and ratio on it."""

    experiment: str
    target: float
    best_group: str  # '' when no group reached the target
    groups: tuple[GroupTime, ...]  # in the profile's group order


@dataclass(frozen=True)
class ProfileCurve:
    """rho(tau) of one group, AlgoPerf's score and the log-tau area under it."""

    group: str
    rho: tuple[float, ...]  # at the profile's taus
    score: float  # AlgoPerf: area under rho over tau in [1, tau_max] / (tau_max - 1)
    log_tau_area: float  # area under rho over log(tau) in [1, tau_max], normalised


@dataclass(frozen=True)
class Profile:
    """The answer to PerformanceProfile and `stride compare --profile`."""

    group_by: str
    metric: str
    time: str
    tau_max: float
    taus: tuple[float, ...]
    curves: tuple[ProfileCurve, ...]  # best score first
    workloads: tuple[WorkloadResult, ...]
    skipped: tuple[Skipped, ...]


def run_time(run: Run, metric: str, target: float, time: str) -> float:
    """Epochs (1-based) or elapsed seconds until `metric` first reaches `target`; inf
    when it never does (or the epoch that reached it has no elapsed seconds)."""
    lower = PROFILE_METRICS[metric]
    for i, epoch in enumerate(run.epochs):
        value = getattr(epoch, metric)
        if value is None or math.isnan(value):
            continue
        if (value <= target) if lower else (value >= target):
            if time == "epochs":
                return float(i + 1)
            seconds = epoch.elapsed_seconds
            return math.inf if seconds is None else float(seconds)
    return math.inf


def _check(metric: str, time: str, tau_max: float, points: int, n_workloads: int) -> None:
    if metric not in PROFILE_METRICS:
        raise InvalidRequest(
            f"profile metric {metric!r} unknown; allowed: {', '.join(PROFILE_METRICS)}"
        )
    if time not in PROFILE_TIMES:
        raise InvalidRequest(f"profile time {time!r} unknown; allowed: {', '.join(PROFILE_TIMES)}")
    if not (math.isfinite(tau_max) and 1.0 < tau_max <= 1e6):
        raise InvalidRequest(f"tau_max {tau_max} is not in (1, 1e6]")
    if not 2 <= points <= MAX_TAU_POINTS:
        raise InvalidRequest(f"tau points {points} not in 2..{MAX_TAU_POINTS}")
    if not 1 <= n_workloads <= MAX_WORKLOADS:
        raise InvalidRequest(
            f"a profile takes 1 to {MAX_WORKLOADS} workloads (experiments), not {n_workloads}"
        )


def _target(workload: Workload, metric: str, default: float | None) -> float:
    target = workload.target if workload.target is not None else default
    if target is None:
        if metric != "val_accuracy":
            raise InvalidRequest(
                f"workload {workload.experiment!r} has no {metric} target: give a target "
                "(a loss has no default)"
            )
        target = DEFAULT_TARGET
    if not math.isfinite(target) or (metric == "val_accuracy" and not 0.0 < target <= 1.0):
        raise InvalidRequest(
            f"workload {workload.experiment!r}: target {target} is not a "
            + ("validation accuracy in (0, 1]" if metric == "val_accuracy" else "finite number")
        )
    return target


def _metrics_of(runs: Sequence[Run]) -> set[str]:
    return {
        m
        for m in PROFILE_METRICS
        for r in runs
        for e in r.epochs
        if getattr(e, m) is not None and not math.isnan(getattr(e, m))
    }


def profile(
    store: RunStore,
    workloads: Sequence[Workload],
    *,
    group_by: str,
    where: Sequence[str] = (),
    include_unfinished: bool = False,
    metric: str = DEFAULT_PROFILE_METRIC,
    target: float | None = None,
    time: str = DEFAULT_PROFILE_TIME,
    tau_max: float = DEFAULT_TAU_MAX,
    points: int = DEFAULT_TAU_POINTS,
) -> Profile:
    """The performance profile of the groups over the workloads (see the module doc)."""
    _check(metric, time, tau_max, points, len(workloads))
    names = [w.experiment for w in workloads]
    if len(set(names)) != len(names):
        raise InvalidRequest("a workload (experiment) is named twice")
    targets = [_target(w, metric, target) for w in workloads]
    chosen = []
    skipped: list[Skipped] = []
    for w in workloads:
        groups = select(
            store, Selection(w.experiment, group_by, {}, tuple(where), include_unfinished)
        )
        chosen.append(groups)
        skipped.extend(groups.skipped)
    have = [_metrics_of([r for runs in g.runs.values() for r in runs]) for g in chosen]
    lacking = [w.experiment for w, m in zip(workloads, have, strict=True) if metric not in m]
    if lacking:
        shared = set.intersection(*have)
        raise InvalidRequest(
            f"no run of {', '.join(map(repr, lacking))} has {metric}: the workloads of a "
            "profile must share its target metric (shared by all: "
            f"{', '.join(sorted(shared)) or 'none'})"
        )
    group_names = sorted({g for groups in chosen for g in groups.runs})
    if len(group_names) > MAX_GROUPS:
        raise InvalidRequest(
            f"the workloads make {len(group_names)} groups; at most {MAX_GROUPS} in a profile"
        )
    results = []
    for w, groups, tgt in zip(workloads, chosen, targets, strict=True):
        times: dict[str, float] = {}
        counts: dict[str, tuple[int, int]] = {}
        for g in group_names:
            per_run = [run_time(r, metric, tgt, time) for r in groups.runs.get(g, ())]
            times[g] = stats.median_time(per_run)
            counts[g] = (len(per_run), sum(math.isfinite(t) for t in per_run))
        ratios = stats.performance_ratios(times)
        finite = {g: t for g, t in times.items() if math.isfinite(t)}
        best = min(finite, key=lambda g: (finite[g], g)) if finite else ""
        results.append(
            WorkloadResult(
                w.experiment,
                tgt,
                best,
                tuple(GroupTime(g, *counts[g], times[g], ratios[g]) for g in group_names),
            )
        )
    taus = stats.log_taus(tau_max, points)
    curves = []
    for i, g in enumerate(group_names):
        ratios_g = [res.groups[i].ratio for res in results]
        curves.append(
            ProfileCurve(
                g,
                tuple(stats.profile_curve(ratios_g, taus)),
                stats.algoperf_score(ratios_g, tau_max),
                stats.log_tau_area(ratios_g, tau_max),
            )
        )
    curves.sort(key=lambda c: (-c.score, c.group))
    return Profile(
        group_by, metric, time, tau_max, tuple(taus), tuple(curves), tuple(results), tuple(skipped)
    )
