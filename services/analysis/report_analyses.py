"""The newer analyses as text tables for `stride compare` (JSON: report.to_jsonable)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.analysis.layers import GroupDeadUnits
from services.analysis.profiles import Profile
from services.analysis.report import _num, _table
from services.analysis.sensitivity import Sensitivity
from services.analysis.tuning import ExpectedBest
from services.analysis.wins import WinMatrix


def _time(value: float, unit: str) -> str:
    if math.isinf(value):
        return "never"
    return f"{value:.0f}" if unit == "epochs" else f"{value:.1f}"


def format_profile(p: Profile) -> str:
    """Per group: the scores and rho at a few taus; per workload: each group's time and ratio."""
    lines = [
        f"performance profile over {len(p.workloads)} workloads, by {p.group_by}: "
        f"{p.time} until {p.metric} reaches the target (median over runs; never = infinite)",
        f"score: AlgoPerf's, the area under rho over tau in [1, {p.tau_max:g}] / "
        f"{p.tau_max - 1:g} (1 = always the best); log-tau area: the same over log tau",
    ]
    marks = [t for t in (1.0, 1.5, 2.0, 4.0, p.tau_max) if t <= p.tau_max]
    marks = list(dict.fromkeys(marks))
    rows = []
    for c in p.curves:
        ratios = [next(g.ratio for g in w.groups if g.group == c.group) for w in p.workloads]
        rho = [sum(r <= t for r in ratios) / len(ratios) for t in marks]
        rows.append(
            [c.group, _num(c.score, 3), _num(c.log_tau_area, 3), *[_num(v, 2) for v in rho]]
        )
    lines += _table(["group", "score", "log-tau area", *[f"rho({t:g})" for t in marks]], rows)
    for w in p.workloads:
        lines += ["", f"workload {w.experiment}: target {w.target:g}, best {w.best_group or '-'}"]
        rows = [
            [
                g.group,
                f"{g.reached}/{g.runs}" if g.runs else "absent",
                _time(g.time, p.time),
                "-" if math.isinf(g.ratio) else _num(g.ratio, 2),
            ]
            for g in w.groups
        ]
        lines += _table(["group", "reached", p.time, "ratio"], rows)
    return "\n".join(lines)


def format_sensitivity(s: Sensitivity) -> str:
    """Per group and learning rate: the metric's mean ±std [min, max] over seeds, and how
    many of the runs diverged."""
    lines = [
        f"learning-rate sensitivity: {s.metric} against {s.lr_key}, by {s.group_by} "
        "(a diverged run counts: chance accuracy, infinite loss)"
    ]
    rows = []
    for c in s.curves:
        for p in c.points:
            spread = f" ±{_num(p.std, 4)}" if p.std is not None else ""
            best = "best" if p.lr == c.best_lr else ""
            rows.append(
                [
                    c.name,
                    repr(p.lr),
                    str(p.n),
                    f"{p.diverged}/{p.n}" if p.diverged else "-",
                    f"{_num(p.mean, 4)}{spread} [{_num(p.low, 4)}, {_num(p.high, 4)}]",
                    best,
                ]
            )
    lines += _table(["group", "lr", "runs", "diverged", "mean ±std [min, max]", ""], rows)
    return "\n".join(lines)


def format_expected_best(e: ExpectedBest) -> str:
    """Per group and k: the unbiased E[best of k trials] (no interval: none has a known
    coverage at these counts)."""
    lines = [
        f"expected best {e.metric} after k trials, by {e.group_by}: the unbiased estimate "
        "(subsets of k trials, without replacement); no interval is given",
    ]
    rows = []
    for c in e.curves:
        trials = f"{c.trials} ({c.diverged} diverged)" if c.diverged else str(c.trials)
        for k, mean in zip(c.ks, c.mean, strict=True):
            rows.append([c.name, trials, str(k), _num(mean, 4)])
    lines += _table(["group", "trials", "k", "expected best"], rows)
    return "\n".join(lines)


def format_win_matrix(w: WinMatrix) -> str:
    """P(row beats column), p = paired by seed, a = all pairs, with the pair count."""
    cells = {(c.a, c.b): c for c in w.cells}
    lines = [f"P(row beats column) on {w.metric} ({w.pairing}; p = paired by seed, a = all pairs)"]
    rows = []
    for a in w.groups:
        row = [a]
        for b in w.groups:
            c = cells.get((a, b))
            row.append(
                "" if c is None else f"{_num(c.probability, 2)} {'p' if c.paired else 'a'}{c.pairs}"
            )
        rows.append(row)
    lines += _table(["", *w.groups], rows)
    return "\n".join(lines)


def format_dead_units(groups: Sequence[GroupDeadUnits]) -> str:
    """Per group and activation layer: the dead fraction at the first and the last epoch."""
    lines = ["dead units per activation layer (mean over runs): first epoch -> last epoch"]
    rows = []
    for g in groups:
        for layer in g.layers:
            rows.append([g.name, layer.layer, _num(layer.mean[0], 3), _num(layer.mean[-1], 3)])
    lines += _table(["group", "layer", "first", "last"], rows)
    return "\n".join(lines)
