"""Comparisons as text tables and as JSON-ready dicts (for `stride compare`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from tabulate import SEPARATING_LINE, DataRow, Line, TableFormat, tabulate

from services.analysis.compare import Comparison, GroupFlow
from services.analysis.stats import Stat


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


def _stat(stat: Stat, digits: int, ci: bool = True) -> str:
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
    lines = [
        f"experiment {c.experiment}: {sum(len(g.runs) for g in c.groups)} runs "
        f"grouped by {c.group_by}, ranked by {c.rank_by}; target val accuracy {c.target:g}",
        "mean ±sample std [95% bootstrap CI of the mean, "
        f"{c.bootstrap_samples} resamples, seed {c.bootstrap_seed}]",
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
            _stat(g.final_val_accuracy, 4),
            _stat(g.best_val_accuracy, 4),
            _stat(g.test_accuracy, 4),
            _stat(g.epochs_to_target, 2, ci=False),
            f"{g.reached_target}/{len(g.runs)}",
            _stat(g.seconds_to_target, 1, ci=False),
            _stat(g.auc_val_loss, 3, ci=False),
            _stat(g.accuracy_gap, 3, ci=False),
            _stat(g.wall_seconds, 1, ci=False),
            _stat(g.images_per_second, 0, ci=False),
            *([_stat(g.final_weight_norm, 3, ci=False)] if norms else []),
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
        lines += ["", "left out:"]
        lines += [f"  {s.run_id}: {s.reason}" for s in c.skipped]
    return "\n".join(lines)


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _sci(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"
