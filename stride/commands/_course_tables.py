"""The claim tables of docs/course.md, computed by the analysis library.

Each table function takes the runs of one claim (one or more experiments) grouped by
config keys, and returns Markdown (what the page includes) and the same numbers as
plain data (summary.json). Every number is the analysis service's own
(services.analysis: `compare`, `gradient_flow`, `dead_units`; definitions in
docs/analysis.md): this module only chooses which to show and lays them out. Runs are
counted as the service counts them: completed, stopped and diverged runs (a diverged
run at chance accuracy, a run that missed the target at its budget); running runs and
runs that failed outside the training are left out, and the table says how many.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runstore import RunStore, StoreLocation
from services.analysis.compare import (
    Comparison,
    GroupFlow,
    Groups,
    GroupStats,
    NoRuns,
    Selection,
    compare,
    gradient_flow,
    select_experiments,
)
from services.analysis.layers import GroupDeadUnits
from services.analysis.layers import dead_units as dead_units_of
from services.analysis.report import format_stat, interval_name, left_out_line
from services.analysis.stats import CONFIDENCE, STUDENT_T, Stat

SPREAD = (
    f"mean ±sample std over seeds; [ ] the {interval_name(STUDENT_T, CONFIDENCE)} "
    "(none for one run); definitions: docs/analysis.md"
)


@dataclass(frozen=True)
class Claim:
    """The runs of one claim and what the analysis library makes of them."""

    groups: Groups
    labels: dict[str, str]  # group name -> "key=value key=value", values as they are
    comparison: Comparison
    flows: dict[str, GroupFlow]
    dead: dict[str, GroupDeadUnits]

    def stats(self) -> list[GroupStats]:
        """Every group's statistics, in the order of the group names."""
        by_name = {g.name: g for g in self.comparison.groups}
        return [by_name[name] for name in self.groups.runs]


@dataclass
class Table:
    markdown: str
    numbers: dict[str, Any] = field(default_factory=dict)


def claim_of(
    store: StoreLocation, experiments: Sequence[str], by: str, target: float
) -> Claim | None:
    """The runs of the experiments grouped by the values of the comma-separated keys `by`
    (an experiment not in the store has none), with their statistics; None for none."""
    reader = RunStore(store)
    present = set(reader.experiments())
    found = [e for e in experiments if e in present]
    if not found:
        return None
    try:
        groups = select_experiments(reader, found, Selection(found[0], group_by=by))
    except NoRuns:
        return None
    keys = [k.strip() for k in by.split(",") if k.strip()]
    labels = {
        name: " ".join(f"{_key_name(k)}={runs[0].label(k)}" for k in keys)
        for name, runs in groups.runs.items()
    }
    return Claim(
        groups,
        labels,
        compare(groups, target=target),
        {f.name: f for f in gradient_flow(groups)},
        {d.name: d for d in dead_units_of(groups.runs)},
    )


def _key_name(key: str) -> str:
    """A key's short name in a label: model.activation.name -> activation, optimizer.lr -> lr."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def write_table(
    kind: str, store: StoreLocation, experiments: Sequence[str], by: str, target: float
) -> Table:
    """The table `kind` (a function below) over the runs of the experiments."""
    makers: dict[str, Callable[[Claim, float], Table]] = {
        "vanishing": vanishing,
        "epochs_to_target": epochs_to_target,
        "dead_units": dead_units,
        "cost": cost,
        "regularisation": regularisation,
    }
    claim = claim_of(store, experiments, by, target)
    if claim is None:
        return Table(f"(no runs in {', '.join(experiments)})\n", {})
    table = makers[kind](claim, target)
    notes = [SPREAD]
    if claim.groups.skipped:
        notes.append(left_out_line(claim.groups.skipped) + ": " + _reasons(claim))
    table.markdown += "\n" + "\n".join(f"{n}." for n in notes) + "\n"
    table.numbers["left_out"] = [
        {"experiment": s.experiment, "run_id": s.run_id, "reason": s.reason}
        for s in claim.groups.skipped
    ]
    return table


def _reasons(claim: Claim) -> str:
    return "; ".join(f"{s.run_id} ({s.reason})" for s in claim.groups.skipped)


# ------------------------------------------------------------------ helpers


def runs_cell(g: GroupStats) -> str:
    """How many runs count, and how many of them diverged."""
    return f"{len(g.runs)} ({g.diverged} diverged)" if g.diverged else str(len(g.runs))


def values(g: GroupStats, metric: str) -> list[float | None]:
    """The per-run values of a metric (summary.json's numbers)."""
    return [getattr(r, metric) for r in g.runs]


def stat_json(stat: Stat) -> dict[str, Any]:
    return {
        "n": stat.n,
        "mean": _finite(stat.mean),
        "std": _finite(stat.std),
        "ci": [stat.ci_low, stat.ci_high] if stat.interval else None,
        "interval": stat.interval,
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def sci(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the tables


def vanishing(claim: Claim, target: float) -> Table:
    """Final accuracy, first and last weight layer's gradient norm, per-layer norms."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    per_layer: dict[str, dict[str, float]] = {}
    for g in claim.stats():
        label = claim.labels[g.name]
        weights = claim.flows[g.name].weight_layers
        flow = claim.flows[g.name]
        dead = claim.dead[g.name].mean_by_epoch
        if weights:
            per_layer[label] = {layer.layer: layer.overall for layer in weights}
        first = weights[0].overall if weights else math.nan
        last = weights[-1].overall if weights else math.nan
        log_ratio = math.log10(flow.ratio) if flow.ratio > 0 else None
        rows.append(
            (
                label,
                runs_cell(g),
                format_stat(g.final_val_accuracy, 4),
                f"{g.reached_target}/{len(g.runs)}",
                f"{sci(first)} / {sci(last)}",
                "-" if log_ratio is None else f"{log_ratio:.2f}",
                f"{dead[-1]:.3f}" if dead else "-",
            )
        )
        numbers[label] = {
            "final_val_accuracy": values(g, "final_val_accuracy"),
            "final_val_accuracy_stat": stat_json(g.final_val_accuracy),
            "reached_target": g.reached_target,
            "diverged": g.diverged,
            "first_layer_grad": _finite(first),
            "last_layer_grad": _finite(last),
            "log10_first_over_last": log_ratio,
            "grad_norm_by_weight_layer": per_layer.get(label, {}),
            "mean_dead_fraction_last_epoch": dead[-1] if dead else None,
        }
    header = (
        "variant",
        "runs",
        "final val acc",
        f"reached {target:g}",
        "grad norm first / last weight layer",
        "log10 first/last",
        "dead (mean over layers, last epoch)",
    )
    text = markdown(header, rows)
    labels = list(per_layer)
    if labels:
        names = list(per_layer[labels[0]])
        layer_rows = [(n, *(sci(per_layer[lab].get(n)) for lab in labels)) for n in names]
        text += (
            "\nGradient norm by weight layer (input side first; mean over epochs of the mean "
            "over seeds):\n\n"
        )
        text += markdown(("weight layer", *labels), layer_rows)
    return Table(text, numbers)


def epochs_to_target(claim: Claim, target: float) -> Table:
    """Epochs to the target validation accuracy (the budget when never), by seed, and
    P(the faster group beats the other) paired by seed."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    by_seed: dict[str, dict[int | None, int]] = {}
    for g in claim.stats():
        label = claim.labels[g.name]
        rows.append(
            (
                label,
                runs_cell(g),
                format_stat(g.epochs_to_target, 2),
                f"{g.reached_target}/{len(g.runs)}",
                format_stat(g.final_val_accuracy, 4, ci=False),
                format_stat(g.test_accuracy, 4),
            )
        )
        by_seed[label] = {r.seed: r.epochs_to_target for r in g.runs}
        numbers[label] = {
            "epochs_to_target": values(g, "epochs_to_target"),
            "epochs_to_target_stat": stat_json(g.epochs_to_target),
            "reached": g.reached_target,
            "diverged": g.diverged,
            "seeds": [r.seed for r in g.runs],
            "test_accuracy_stat": stat_json(g.test_accuracy),
        }
    header = ("group", "runs", f"epochs to {target:g}", "reached", "final val acc", "test acc")
    text = markdown(header, rows)
    labels = list(by_seed)
    seeds = sorted({s for v in by_seed.values() for s in v if s is not None})
    text += "\nEpochs to target by seed (a run that never reached it counts as its budget):\n\n"
    text += markdown(
        ("seed", *labels), [(s, *(by_seed[lab].get(s, "-") for lab in labels)) for s in seeds]
    )
    c = claim.comparison
    if len(c.ranking) == 2:
        faster, slower = c.ranking
        win = next(p for p in c.pairwise if (p.a, p.b) == (faster, slower))
        how = f"paired by seed over {win.pairs} seeds" if win.paired else f"over {win.pairs} pairs"
        p = "-" if win.probability is None else f"{win.probability:.2f}"
        text += (
            f"\nP({claim.labels[faster]} reaches it in fewer epochs than "
            f"{claim.labels[slower]}) = {p}, {how} (a tie counts one half).\n"
        )
        numbers["paired"] = {
            "faster": claim.labels[faster],
            "probability": win.probability,
            "pairs": win.pairs,
            "paired_by_seed": win.paired,
        }
    return Table(text, numbers)


def dead_units(claim: Claim, target: float) -> Table:
    """Dead fraction per activation layer at the last epoch, and its course over epochs."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    for g in claim.stats():
        label = claim.labels[g.name]
        dead = claim.dead[g.name]
        final = {layer.layer: layer.mean[-1] for layer in dead.layers}
        rows.append(
            (
                label,
                runs_cell(g),
                ", ".join(f"{n.removesuffix('.act')}: {v:.3f}" for n, v in final.items()) or "-",
                " → ".join(f"{v:.3f}" for v in dead.mean_by_epoch) or "-",
                format_stat(g.final_val_accuracy, 4),
                format_stat(g.test_accuracy, 4, ci=False),
            )
        )
        numbers[label] = {
            "runs": len(g.runs),
            "diverged": g.diverged,
            "dead_last_epoch": final,
            "mean_dead_by_epoch": list(dead.mean_by_epoch),
            "final_val_accuracy": values(g, "final_val_accuracy"),
        }
    header = (
        "group",
        "runs",
        "dead fraction per layer, last epoch",
        "mean dead fraction by epoch",
        "final val acc",
        "test acc",
    )
    return Table(markdown(header, rows), numbers)


def cost(claim: Claim, target: float) -> Table:
    """Parameters and training images/s (epochs after the first) per activation."""
    stats = claim.stats()
    base = next(
        (g.images_per_second.mean for g in stats if claim.labels[g.name].endswith("=relu")), None
    )
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    for g in stats:
        label = claim.labels[g.name]
        params = next((r.parameters for r in g.runs if r.parameters is not None), None)
        speed = g.images_per_second.mean
        relative = speed / base if speed is not None and base else None
        rows.append(
            (
                label,
                runs_cell(g),
                "-" if params is None else f"{params:,}",
                format_stat(g.images_per_second, 0, ci=False),
                "-" if relative is None else f"{relative:.2f}",
                format_stat(g.final_val_accuracy, 4, ci=False),
            )
        )
        numbers[label] = {
            "params": params,
            "images_per_second": values(g, "images_per_second"),
            "relative_to_relu": relative,
        }
    header = ("group", "runs", "parameters", "images/s (epochs 2+)", "relative to relu", "val acc")
    return Table(markdown(header, rows), numbers)


def regularisation(claim: Claim, target: float) -> Table:
    """Weight norm, generalisation gap at the last epoch, test accuracy, epochs run."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    for g in claim.stats():
        label = claim.labels[g.name]
        norms = g.weight_norm
        first = norms.mean[0] if norms.mean else math.nan
        first_std = norms.std[0] if norms.std else math.nan
        first_text = "-" if math.isnan(first) else f"{first:.2f}"
        if not math.isnan(first_std):
            first_text += f" ±{first_std:.2f}"
        rows.append(
            (
                label,
                runs_cell(g),
                format_stat(g.epochs, 1, ci=False),
                f"{first_text} → {format_stat(g.final_weight_norm, 2, ci=False)}",
                format_stat(g.accuracy_gap, 4, ci=False),
                format_stat(g.loss_gap, 4, ci=False),
                format_stat(g.test_accuracy, 4),
            )
        )
        numbers[label] = {
            "epochs_run": values(g, "epochs"),
            "weight_norm_first": _finite(first),
            "weight_norm_last": values(g, "final_weight_norm"),
            "accuracy_gap": values(g, "accuracy_gap"),
            "loss_gap": values(g, "loss_gap"),
            "test_accuracy": values(g, "test_accuracy"),
            "test_accuracy_stat": stat_json(g.test_accuracy),
        }
    header = (
        "group",
        "runs",
        "epochs run",
        "weight norm epoch 1 → last",
        "acc gap (train - val)",
        "loss gap (val - train)",
        "test acc",
    )
    return Table(markdown(header, rows), numbers)
