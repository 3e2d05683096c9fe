"""The claim tables of docs/course.md, computed from the run store (runstore records only).

Each table function takes the runs of one experiment grouped by config keys and returns
Markdown (what the page includes) and the same numbers as plain data (summary.json).
Means are over seeds; "±" is the sample standard deviation (0 for one run). Only
completed runs give numbers; failed ones are counted in `runs`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runstore import Run, RunStore, StoreLocation

WEIGHT_KINDS = ("conv", "linear")


@dataclass(frozen=True)
class Group:
    label: str
    runs: tuple[Run, ...]  # completed, in seed order
    total: int  # every run of the group, failed ones included

    @property
    def count(self) -> str:
        return f"{len(self.runs)}/{self.total}"


@dataclass
class Table:
    markdown: str
    numbers: dict[str, Any] = field(default_factory=dict)


def groups_of(store: StoreLocation, experiments: Sequence[str], by: str) -> list[Group]:
    """The runs of the experiments grouped by the values of the comma-separated keys
    `by`; an experiment not in the store has no runs."""
    keys = [k.strip() for k in by.split(",") if k.strip()]
    found: dict[str, list[Run]] = {}
    reader = RunStore(store)
    present = set(reader.experiments())
    runs = [r for e in experiments if e in present for r in reader.scan(e).runs]
    for run in runs:
        label = " ".join(f"{_key_name(k)}={_short_value(run.label(k))}" for k in keys)
        found.setdefault(label, []).append(run)
    groups = []
    for label, runs in found.items():
        done = sorted((r for r in runs if r.status == "completed"), key=lambda r: r.seed or 0)
        groups.append(Group(label, tuple(done), len(runs)))
    return groups


def _key_name(key: str) -> str:
    """A key's short name in a label: model.activation.name -> activation, optimizer.lr -> lr."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def _short_value(text: str) -> str:
    """A float with 3 significant digits (a tuned rate 0.0761, not 0.07608481233714794)."""
    if not any(c in text for c in ".eE"):
        return text
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def write_table(
    kind: str, store: StoreLocation, experiments: Sequence[str], by: str, target: float
) -> Table:
    """The table `kind` (a function below) over the runs of the experiments."""
    makers: dict[str, Callable[[list[Group], float], Table]] = {
        "vanishing": vanishing,
        "epochs_to_target": epochs_to_target,
        "dead_units": dead_units,
        "cost": cost,
        "regularisation": regularisation,
    }
    groups = groups_of(store, experiments, by)
    if not groups:
        return Table(f"(no runs in {', '.join(experiments)})\n", {})
    return makers[kind](groups, target)


# ------------------------------------------------------------------ helpers


def mean_sd(values: Sequence[float | None]) -> tuple[float, float]:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return math.nan, math.nan
    return statistics.fmean(clean), statistics.stdev(clean) if len(clean) > 1 else 0.0


def fmt(values: Sequence[float | None], digits: int = 4) -> str:
    mean, sd = mean_sd(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} ±{sd:.{digits}f}"


def sci(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def weight_layers(run: Run) -> list[str]:
    """Conv and dense layers in depth order: config.json's layer table, else by name."""
    record = run.record
    if record is not None and record.layers:
        return [str(x["name"]) for x in record.layers if x.get("kind") in WEIGHT_KINDS]
    names = [name for name, _ in run.epochs[0].grad_norms] if run.epochs else []
    return [n for n in names if n.endswith(".conv") or ".fc" in n]


def layer_grad_means(run: Run) -> dict[str, float]:
    """Each layer's gradient norm averaged over the run's epochs."""
    sums: dict[str, list[float]] = {}
    for epoch in run.epochs:
        for name, norm in epoch.grad_norms:
            sums.setdefault(name, []).append(norm)
    return {name: statistics.fmean(v) for name, v in sums.items()}


def epochs_to(run: Run, target: float) -> int | None:
    return next(
        (e.epoch for e in run.epochs if (e.val_accuracy or 0.0) >= target),
        None,
    )


def last(run: Run, attribute: str) -> float:
    value = getattr(run.epochs[-1], attribute) if run.epochs else None
    return math.nan if value is None else float(value)


def mean_dead(run: Run, epoch_index: int = -1) -> float:
    """The unweighted mean over activation layers of the dead fraction at one epoch."""
    if not run.epochs or not run.epochs[epoch_index].dead_units:
        return math.nan
    return statistics.fmean(v for _, v in run.epochs[epoch_index].dead_units)


# ------------------------------------------------------------------ the tables


def vanishing(groups: list[Group], target: float) -> Table:
    """Final accuracy, first and last weight layer's gradient norm, per-layer norms."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    per_layer: dict[str, dict[str, float]] = {}
    for g in groups:
        if not g.runs:
            rows.append((g.label, g.count, *["-"] * 6))
            continue
        layers = weight_layers(g.runs[0])
        means = [layer_grad_means(r) for r in g.runs]
        by_layer = {n: statistics.fmean(m.get(n, math.nan) for m in means) for n in layers}
        first, final = by_layer[layers[0]], by_layer[layers[-1]]
        ratio = first / final if final else math.nan
        reached = sum(epochs_to(r, target) is not None for r in g.runs)
        dead = [mean_dead(r) for r in g.runs]
        acc = [last(r, "val_accuracy") for r in g.runs]
        rows.append(
            (
                g.label,
                g.count,
                fmt(acc),
                f"{reached}/{len(g.runs)}",
                f"{sci(first)} / {sci(final)}",
                f"{math.log10(ratio):.2f}" if ratio > 0 else "-",
                fmt(dead, 3),
            )
        )
        per_layer[g.label] = by_layer
        numbers[g.label] = {
            "final_val_accuracy": acc,
            "reached_target": reached,
            "first_layer_grad": first,
            "last_layer_grad": final,
            "log10_first_over_last": math.log10(ratio) if ratio > 0 else None,
            "grad_norm_by_weight_layer": by_layer,
            "mean_dead_fraction_last_epoch": dead,
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
        layer_names = list(per_layer[labels[0]])
        layer_rows = [
            (name, *(sci(per_layer[lab].get(name, math.nan)) for lab in labels))
            for name in layer_names
        ]
        text += (
            "\nGradient norm by weight layer (input side first; mean over epochs and seeds):\n\n"
        )
        text += markdown(("weight layer", *labels), layer_rows)
    return Table(text, numbers)


def epochs_to_target(groups: list[Group], target: float) -> Table:
    """Epochs to the target validation accuracy (budget when never), paired by seed."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    by_seed: dict[str, dict[int | None, int]] = {}
    for g in groups:
        budget = [len(r.epochs) for r in g.runs]
        epochs = [epochs_to(r, target) for r in g.runs]
        counted = [e if e is not None else b for e, b in zip(epochs, budget, strict=True)]
        reached = sum(e is not None for e in epochs)
        rows.append(
            (
                g.label,
                g.count,
                fmt(counted, 2),
                f"{reached}/{len(g.runs)}",
                fmt([last(r, "val_accuracy") for r in g.runs]),
                fmt([r.summary.test_accuracy for r in g.runs if r.summary]),
            )
        )
        by_seed[g.label] = {r.seed: c for r, c in zip(g.runs, counted, strict=True)}
        numbers[g.label] = {
            "epochs_to_target": counted,
            "reached": reached,
            "seeds": [r.seed for r in g.runs],
        }
    header = ("group", "runs", f"epochs to {target:g}", "reached", "final val acc", "test acc")
    text = markdown(header, rows)
    labels = list(by_seed)
    seeds = sorted({s for v in by_seed.values() for s in v if s is not None})
    text += "\nEpochs to target by seed (a run that never reached it counts as its budget):\n\n"
    text += markdown(
        ("seed", *labels), [(s, *(by_seed[lab].get(s, "-") for lab in labels)) for s in seeds]
    )
    if len(labels) == 2:
        a, b = labels
        paired = [s for s in seeds if s in by_seed[a] and s in by_seed[b]]
        faster = sum(by_seed[b][s] < by_seed[a][s] for s in paired)
        ties = sum(by_seed[b][s] == by_seed[a][s] for s in paired)
        text += f"\n{b} faster than {a} on {faster} of {len(paired)} seeds ({ties} ties).\n"
        numbers["paired"] = {"faster": b, "wins": faster, "ties": ties, "seeds": len(paired)}
    return Table(text, numbers)


def dead_units(groups: list[Group], target: float) -> Table:
    """Dead fraction per activation layer at the last epoch, and its course over epochs."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    for g in groups:
        if not g.runs:
            rows.append((g.label, g.count, "-", "-", "-", "-"))
            numbers[g.label] = {"runs": g.count}
            continue
        names = [n for n, _ in g.runs[0].epochs[-1].dead_units]
        final = {
            n: statistics.fmean(dict(r.epochs[-1].dead_units).get(n, math.nan) for r in g.runs)
            for n in names
        }
        epochs = min(len(r.epochs) for r in g.runs)
        series = [statistics.fmean(mean_dead(r, i) for r in g.runs) for i in range(epochs)]
        rows.append(
            (
                g.label,
                g.count,
                ", ".join(f"{n.removesuffix('.act')}: {v:.3f}" for n, v in final.items()),
                " → ".join(f"{v:.3f}" for v in series),
                fmt([last(r, "val_accuracy") for r in g.runs]),
                fmt([r.summary.test_accuracy for r in g.runs if r.summary]),
            )
        )
        numbers[g.label] = {"runs": g.count, "dead_last_epoch": final, "mean_dead_by_epoch": series}
    header = (
        "group",
        "runs (completed/all)",
        "dead fraction per layer, last epoch",
        "mean dead fraction by epoch",
        "final val acc",
        "test acc",
    )
    return Table(markdown(header, rows), numbers)


def cost(groups: list[Group], target: float) -> Table:
    """Parameters and training images/s (epochs after the first) per activation."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    base = None
    for g in groups:
        if not g.runs:
            rows.append((g.label, g.count, "-", "-", "-", "-"))
            continue
        record = g.runs[0].record
        params = sum(int(x.get("params", 0)) for x in record.layers) if record else 0
        speed = [
            statistics.fmean(e.images_per_second or math.nan for e in r.epochs[1:] or r.epochs)
            for r in g.runs
        ]
        mean = mean_sd(speed)[0]
        if base is None and "relu" in g.label and "leaky" not in g.label:
            base = mean
        numbers[g.label] = {"params": params, "images_per_second": speed}
        rows.append(
            (
                g.label,
                g.count,
                f"{params:,}",
                fmt(speed, 0),
                mean,
                fmt([last(r, "val_accuracy") for r in g.runs]),
            )
        )
    rows = [
        (*row[:4], f"{row[4] / base:.2f}" if base and isinstance(row[4], float) else "-", row[5])
        for row in rows
    ]
    header = ("group", "runs", "parameters", "images/s (epochs 2+)", "relative to relu", "val acc")
    return Table(markdown(header, rows), numbers)


def regularisation(groups: list[Group], target: float) -> Table:
    """Weight norm, generalisation gap at the last epoch, test accuracy, epochs run."""
    rows: list[tuple[Any, ...]] = []
    numbers: dict[str, Any] = {}
    for g in groups:
        acc_gap = [last(r, "train_accuracy") - last(r, "val_accuracy") for r in g.runs]
        loss_gap = [last(r, "val_loss") - last(r, "train_loss") for r in g.runs]
        first_norm = [r.epochs[0].weight_norm for r in g.runs if r.epochs]
        last_norm = [last(r, "weight_norm") for r in g.runs]
        test = [r.summary.test_accuracy for r in g.runs if r.summary]
        ran = [float(len(r.epochs)) for r in g.runs]
        rows.append(
            (
                g.label,
                g.count,
                fmt(ran, 1),
                f"{fmt(first_norm, 2)} → {fmt(last_norm, 2)}",
                fmt(acc_gap),
                fmt(loss_gap),
                fmt(test),
            )
        )
        numbers[g.label] = {
            "epochs_run": ran,
            "weight_norm_first": first_norm,
            "weight_norm_last": last_norm,
            "accuracy_gap": acc_gap,
            "loss_gap": loss_gap,
            "test_accuracy": test,
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
