"""Which runs a comparison counts, and their groups: the first step of every analysis.

A run is counted by how it ended (`runstore.outcome`: summary.json's status and, for a
failed run, its `failure`, the reason's text only in schema-1 files): completed,
stopped (by a sweep's scheduler) and diverged runs are results of their configuration
and always count; a diverged run counts even when it wrote no epoch. Running runs and
runs that failed outside the training (`failure: "error"`: a worker lost, an error)
say nothing about their configuration: they are left out, each with its reason, unless
`include_unfinished` asks for them (with the epochs they have; one without an epoch is
still left out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runstore import RESULTS, Run, RunStore, Skipped, check_read_name, outcome
from services.analysis.errors import InvalidRequest, NoRuns
from services.analysis.options import DEFAULT_GROUP_BY
from services.analysis.store import select_runs

MAX_GROUPS = 256  # a comparison's pairwise table has groups x (groups - 1) rows


@dataclass(frozen=True)
class Selection:
    """What to compare: one experiment, grouped by a config key or by explicit run ids."""

    experiment: str
    group_by: str = DEFAULT_GROUP_BY  # a dotted config key, or several joined by ","
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)  # name -> run ids
    where: Sequence[str] = ()  # KEY=VALUE filters on the config
    # also running runs and runs that failed outside the training (left out by default)
    include_unfinished: bool = False


@dataclass(frozen=True)
class Groups:
    """Runs by group name (sorted names) and the runs left out, with the reason."""

    experiment: str
    group_by: str
    runs: Mapping[str, tuple[Run, ...]]
    skipped: tuple[Skipped, ...]


def select(store: RunStore, selection: Selection) -> Groups:
    """Read an experiment and split its runs into groups; NoRuns when none is left."""
    return select_experiments(store, [selection.experiment], selection)


def select_experiments(store: RunStore, experiments: Sequence[str], selection: Selection) -> Groups:
    """`select` over the runs of several experiments together (the course's claims
    span several sweeps); `selection.experiment` names the answer."""
    skipped: list[Skipped] = []
    runs: list[Run] = []
    for experiment in experiments:
        check_read_name("experiment", experiment)
        scan = store.scan(experiment)
        skipped.extend(scan.malformed)
        runs.extend(select_runs(scan.runs, where=selection.where))
    runs = [r for r in runs if _counted(r, selection.include_unfinished, skipped)]
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


def _counted(run: Run, include_unfinished: bool, skipped: list[Skipped]) -> bool:
    """Whether the run counts; a run left out goes into `skipped` with the reason."""
    ended = outcome(run)
    if ended not in RESULTS and not include_unfinished:
        why = f": {run.summary.reason}" if run.summary and run.summary.reason else ""
        what = "failed outside the training" if ended == "failed" else ended
        skipped.append(Skipped(run.experiment, run.run_id, f"{what}{why}"))
        return False
    if not run.epochs and ended != "diverged":
        skipped.append(Skipped(run.experiment, run.run_id, f"no epoch written ({ended})"))
        return False
    return True


def left_out_counts(skipped: Sequence[Skipped]) -> dict[str, int]:
    """How many runs were left out by kind of reason (the reason up to its first colon:
    running, failed outside the training, malformed, no epoch written (...), ...), for a
    one-line account beside the list."""
    counts: dict[str, int] = {}
    for s in skipped:
        kind = s.reason.split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


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
                "(absent, malformed, filtered out, running or failed outside the training)"
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
