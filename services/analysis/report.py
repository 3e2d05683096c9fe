"""Comparisons as text tables and as JSON-ready dicts (for `stride compare`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from tabulate import SEPARATING_LINE, DataRow, Line, TableFormat, tabulate

from runstore import Skipped
from services.analysis.compare import Comparison, GroupFlow, left_out_counts
from services.analysis.stats import STUDENT_T, Stat

INTERVAL_NAMES = {STUDENT_T: "Student's t"}  # how a table names each interval method


def interval_name(method: str, confidence: float) -> str:
    """An interval method as a table says it, e.g. "95% Student's t interval of the mean"."""
    return f"{confidence:.0%} {INTERVAL_NAMES.get(method, method)} interval of the mean"


def left_out_line(skipped: Sequence[Skipped]) -> str:
    """One line saying how many runs were left out and why, e.g.
    "left out: 3 runs (2 running, 1 failed outside the training)"; "" for none."""
    if not skipped:
        return ""
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(left_out_counts(skipped).items()))
    runs = "run" if len(skipped) == 1 else "runs"
    return f"left out: {len(skipped)} {runs} ({kinds})"


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and floats as plain JSON values (NaN and inf become null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def format_stat(stat: Stat, digits: int, ci: bool = True) -> str:
    """`mean ±std [low, high]` (the interval when `ci` and there is one), or "-"."""
    if stat.mean is None:
        return "-"
    text = _num(stat.mean, digits)
    if stat.std is not None:
        text += f" ±{_num(stat.std, digits)}"
    if ci and stat.ci_low is not None and stat.ci_high is not None:
        text += f" [{_num(stat.ci_low, digits)}, {_num(stat.ci_high, digits)}]"
    return text


# A header, a rule of dashes under each column, rows: the tables of `stride models`,
# `stride sweep` and `stride train` look the same (pipeline.tables; services do not
# import the pipeline). The header goes in as a row: as tabulate's `headers` it would
# widen each column by two.
_TEXT_TABLE = TableFormat(
    lineabove=None,
    linebelowheader=Line("", "-", "  ", ""),  # also what SEPARATING_LINE draws
    linebetweenrows=None,
    linebelow=None,
    headerrow=DataRow("", "  ", ""),
    datarow=DataRow("", "  ", ""),
    padding=0,
    with_header_hide=None,
)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    table = [list(header), [SEPARATING_LINE], *rows]
    return tabulate(table, tablefmt=_TEXT_TABLE, disable_numparse=True).split("\n")


def format_comparison(comparison: Comparison, flows: Sequence[GroupFlow] = ()) -> str:
    """The comparison as aligned tables: groups (best first), P(row beats column), skipped runs."""
    c = comparison
    counted = [r for g in c.groups for r in g.runs]
    notes = [
        f"; {n} {what}"
        for n, what in (
            (
                sum(r.outcome == "diverged" for r in counted),
                "diverged (final and test accuracy counted at chance)",
            ),
            (sum(r.outcome == "stopped" for r in counted), "stopped by a scheduler (counted)"),
        )
        if n
    ]
    lines = [
        f"experiment {c.experiment}: {len(counted)} runs grouped by {c.group_by}, ranked by "
        f"{c.rank_by}; target val accuracy {c.target:g}",
        f"mean ±sample std [{interval_name(c.interval, c.confidence)}; none for one run]",
        "a run that missed the target counts its budget (training.epochs), whatever ended it"
        + "".join(notes),
        "",
    ]
    header = [
        "rank",
        "group",
        "runs",
        "final val acc",
        "best val acc",
        "test acc",
        "epochs to target",
        "reached",
        "diverged",
        "seconds to target",
        f"val-loss AUC (1..{c.auc_epochs})",
        "acc gap (train - val)",
        "wall s",
        "images/s",
    ]
    # Runs that recorded weight_norm (dropout vs weight decay) get its column.
    norms = any(g.final_weight_norm.n for g in c.groups)
    if norms:
        header.append("final weight norm")
    rows = [
        [
            str(i),
            g.name,
            str(len(g.runs)),
            format_stat(g.final_val_accuracy, 4),
            format_stat(g.best_val_accuracy, 4),
            format_stat(g.test_accuracy, 4),
            format_stat(g.epochs_to_target, 2),
            f"{g.reached_target}/{len(g.runs)}",
            f"{g.diverged}/{len(g.runs)}",
            format_stat(g.seconds_to_target, 1, ci=False),
            format_stat(g.auc_val_loss, 3, ci=False),
            format_stat(g.accuracy_gap, 3, ci=False),
            format_stat(g.wall_seconds, 1, ci=False),
            format_stat(g.images_per_second, 0, ci=False),
            *([format_stat(g.final_weight_norm, 3, ci=False)] if norms else []),
        ]
        for i, g in enumerate(c.groups, start=1)
    ]
    lines += _table(header, rows)
    if len(c.ranking) > 1:
        probability = {(p.a, p.b): p for p in c.pairwise}
        lines += ["", f"P(row beats column) on {c.rank_by} (p = paired by seed, a = all pairs)"]
        matrix = []
        for a in c.ranking:
            cells = [a]
            for b in c.ranking:
                p = probability.get((a, b))
                if p is None:
                    cells.append("")
                else:
                    mark = "p" if p.paired else "a"
                    cells.append(f"{_num(p.probability, 2)} {mark}{p.pairs}")
            matrix.append(cells)
        lines += _table(["", *c.ranking], matrix)
    if flows:
        lines += ["", "gradient norm, mean over epochs (first / last weight layer: conv, linear)"]
        rows = []
        for f in flows:
            weights = f.weight_layers
            if not weights:
                rows.append([f.name, "0", "-", "-", "-", "-"])
                continue
            first, last = weights[0], weights[-1]
            rows.append(
                [
                    f.name,
                    str(len(weights)),
                    f"{first.layer} {_sci(_finite_mean(first.mean))}",
                    f"{last.layer} {_sci(_finite_mean(last.mean))}",
                    _sci(f.ratio),
                    _num(math.log10(f.ratio), 2) if f.ratio > 0 else "-",
                ]
            )
        lines += _table(["group", "weight layers", "first", "last", "first/last", "log10"], rows)
    if c.skipped:
        lines += ["", f"{left_out_line(c.skipped)}:"]
        lines += [f"  {s.run_id}: {s.reason}" for s in c.skipped]
    return "\n".join(lines)


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _sci(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"
