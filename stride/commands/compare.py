"""`stride compare`: compare the runs of an experiment, without a server.

The same code answers the analysis service's CompareRuns, GradientFlow and
RenderComparison (services.analysis).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from services.analysis.options import (
    DEFAULT_EXPECTED_BEST_METRIC,
    DEFAULT_GROUP_BY,
    DEFAULT_LR_KEY,
    DEFAULT_PROFILE_METRIC,
    DEFAULT_PROFILE_TIME,
    DEFAULT_RANK_BY,
    DEFAULT_SENSITIVITY_METRIC,
    DEFAULT_TAU_MAX,
    EXPECTED_BEST_METRICS,
    PROFILE_METRICS,
    PROFILE_TIMES,
    SENSITIVITY_METRICS,
)
from services.analysis.options import RANK_METRICS as _RANK_METRICS
from stride.commands._paths import local_path, store_location

NAME = "compare"
HELP = "compare the runs of an experiment: statistics per group, ranking, gradient flow, plot"
ORDER = 60
RANK_METRICS = tuple(_RANK_METRICS)  # the choices of --rank-by, in the service's order


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `stride compare`."""
    parser.add_argument("experiment", help="experiment name (a folder under --runs)")
    parser.add_argument(
        "--runs",
        type=store_location,
        default=os.environ.get("STRIDE_RUNS", "runs"),
        help="run store: a folder or a URI such as file:///PATH (env STRIDE_RUNS, default runs)",
    )
    parser.add_argument(
        "--by",
        default=DEFAULT_GROUP_BY,
        metavar="KEY",
        help=f"dotted config key to group runs by, or several joined by ',' "
        f"(default {DEFAULT_GROUP_BY})",
    )
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME=RUN,RUN",
        help="an explicit group of run ids instead of --by (repeat for each group)",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs whose config has this value (repeatable)",
    )
    parser.add_argument(
        "--target", type=float, default=0.95, help="target validation accuracy (default 0.95)"
    )
    parser.add_argument(
        "--rank-by",
        default=DEFAULT_RANK_BY,
        choices=list(RANK_METRICS),
        help=f"metric that ranks the groups (default {DEFAULT_RANK_BY})",
    )
    parser.add_argument(
        "--include-unfinished",
        action="store_true",
        help="also compare running runs and runs that failed outside the training (left "
        "out by default; completed, stopped and diverged runs always count)",
    )
    analyses = parser.add_argument_group(
        "analyses past the comparison (each adds a table and a panel)"
    )
    analyses.add_argument(
        "--profile",
        action="store_true",
        help="performance profile over EXPERIMENT and every --workload, with AlgoPerf's score",
    )
    analyses.add_argument(
        "--workload",
        action="append",
        default=[],
        metavar="EXP[=TARGET]",
        help="another experiment of the profile, with its own target (repeatable)",
    )
    analyses.add_argument(
        "--profile-metric",
        default=DEFAULT_PROFILE_METRIC,
        choices=list(PROFILE_METRICS),
        help=f"metric that reaches the target (default {DEFAULT_PROFILE_METRIC}; val_loss: "
        "reached at or below it)",
    )
    analyses.add_argument(
        "--profile-target",
        type=float,
        metavar="T",
        help="the profile's target for workloads without their own (default: --target "
        "for val_accuracy; required for val_loss)",
    )
    analyses.add_argument(
        "--profile-time",
        default=DEFAULT_PROFILE_TIME,
        choices=list(PROFILE_TIMES),
        help=f"time to target in epochs or elapsed seconds (default {DEFAULT_PROFILE_TIME})",
    )
    analyses.add_argument(
        "--tau-max",
        type=float,
        default=DEFAULT_TAU_MAX,
        help=f"the profile's range of tau, 1..TAU_MAX (default {DEFAULT_TAU_MAX:g})",
    )
    analyses.add_argument(
        "--sensitivity",
        action="store_true",
        help="learning-rate sensitivity: the metric against the learning rate per group",
    )
    analyses.add_argument(
        "--lr-key",
        default=DEFAULT_LR_KEY,
        metavar="KEY",
        help=f"config key of the learning rate (default {DEFAULT_LR_KEY}; null there: "
        "effective.lr)",
    )
    analyses.add_argument(
        "--sensitivity-metric",
        default=DEFAULT_SENSITIVITY_METRIC,
        choices=list(SENSITIVITY_METRICS),
        help=f"default {DEFAULT_SENSITIVITY_METRIC}",
    )
    analyses.add_argument(
        "--expected-best",
        action="store_true",
        help="expected best validation metric after k trials of a random search, per group",
    )
    analyses.add_argument(
        "--k",
        type=int,
        default=0,
        help="trials 1..K for --expected-best (default: each group's trial count)",
    )
    analyses.add_argument(
        "--expected-best-metric",
        default=DEFAULT_EXPECTED_BEST_METRIC,
        choices=list(EXPECTED_BEST_METRICS),
        help=f"default {DEFAULT_EXPECTED_BEST_METRIC}",
    )
    analyses.add_argument(
        "--win-metric",
        choices=list(RANK_METRICS),
        help="also the win-probability matrix on this metric (the table's is on --rank-by)",
    )
    parser.add_argument("--plot", type=local_path, metavar="FILE.png", help="also write the figure")
    parser.add_argument("--width", type=int, default=1500, help="figure width in pixels")
    parser.add_argument("--height", type=int, default=900, help="figure height in pixels")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def parse_groups(items: list[str]) -> dict[str, list[str]]:
    """`NAME=RUN,RUN` options as {name: [run ids]}; ValueError names a bad one."""
    groups: dict[str, list[str]] = {}
    for item in items:
        name, sep, ids = item.partition("=")
        run_ids = [i.strip() for i in ids.split(",") if i.strip()]
        if not sep or not name.strip() or not run_ids:
            raise ValueError(f"--group {item!r} is not NAME=RUN_ID[,RUN_ID...]")
        if name.strip() in groups:
            raise ValueError(f"--group {name.strip()!r} given twice")
        groups[name.strip()] = run_ids
    return groups


def parse_workloads(items: list[str]) -> list[tuple[str, float | None]]:
    """`EXP[=TARGET]` options as (experiment, target or None); ValueError names a bad one."""
    out: list[tuple[str, float | None]] = []
    for item in items:
        name, sep, target = item.partition("=")
        if not name.strip() or (sep and not target.strip()):
            raise ValueError(f"--workload {item!r} is not EXPERIMENT[=TARGET]")
        try:
            out.append((name.strip(), float(target) if sep else None))
        except ValueError:
            raise ValueError(f"--workload {item!r}: target {target!r} is not a number") from None
    return out


def run(args: argparse.Namespace) -> int:
    """Compare, print, and write the plot when asked."""
    from runstore import RunStore
    from services.analysis.compare import Selection, compare, gradient_flow, select
    from services.analysis.layers import dead_units
    from services.analysis.panels import Extras
    from services.analysis.report import format_comparison, to_jsonable

    store = RunStore(args.runs)
    selection = Selection(
        experiment=args.experiment,
        group_by=args.by,
        groups=parse_groups(args.group),
        where=tuple(args.where),
        include_unfinished=args.include_unfinished,
    )
    workloads = parse_workloads(args.workload)
    if workloads and not args.profile:
        raise ValueError("--workload goes with --profile")
    groups = select(store, selection)
    comparison = compare(groups, target=args.target, rank_by=args.rank_by)
    flows = gradient_flow(groups)
    extras = Extras(dead_units=dead_units(groups.runs), **_analyses(args, store, groups, workloads))
    if args.plot:
        from services.analysis.plots import render_png

        png = render_png(groups, flows, width=args.width, height=args.height, extras=extras)
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        args.plot.write_bytes(png)
    if args.json:
        out = {"comparison": to_jsonable(comparison), "gradient_flow": to_jsonable(flows)}
        out |= {k: to_jsonable(v) for k, v in vars(extras).items() if v}
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(format_comparison(comparison, flows))
        for text in _tables(extras):
            print(f"\n{text}")
        if args.plot:
            print(f"\nplot: {args.plot} ({args.width}x{args.height} px)")
    return 0


def _analyses(
    args: argparse.Namespace, store: Any, groups: Any, workloads: list[tuple[str, float | None]]
) -> dict[str, Any]:
    """The analyses the options asked for, by Extras field."""
    out: dict[str, Any] = {}
    if args.profile:
        from services.analysis.profiles import Workload, profile

        default = args.profile_target
        if default is None and args.profile_metric == "val_accuracy":
            default = args.target
        out["profile"] = profile(
            store,
            [Workload(args.experiment), *(Workload(e, t) for e, t in workloads)],
            group_by=args.by,
            where=tuple(args.where),
            include_unfinished=args.include_unfinished,
            metric=args.profile_metric,
            target=default,
            time=args.profile_time,
            tau_max=args.tau_max,
        )
    if args.sensitivity:
        from services.analysis.sensitivity import sensitivity

        out["sensitivity"] = sensitivity(groups, metric=args.sensitivity_metric, lr_key=args.lr_key)
    if args.expected_best:
        from services.analysis.tuning import expected_best

        out["expected_best"] = expected_best(groups, metric=args.expected_best_metric, k=args.k)
    if args.win_metric:
        from services.analysis.wins import win_matrix

        out["win_matrix"] = win_matrix(groups, metric=args.win_metric, target=args.target)
    return out


def _tables(extras: Any) -> list[str]:
    from services.analysis import report_analyses as r

    out = []
    if any(g.layers for g in extras.dead_units):
        out.append(r.format_dead_units(extras.dead_units))
    if extras.profile is not None:
        out.append(r.format_profile(extras.profile))
    if extras.sensitivity is not None:
        out.append(r.format_sensitivity(extras.sensitivity))
    if extras.expected_best is not None:
        out.append(r.format_expected_best(extras.expected_best))
    if extras.win_matrix is not None:
        out.append(r.format_win_matrix(extras.win_matrix))
    return out
