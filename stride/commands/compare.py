"""`stride compare`: compare the runs of an experiment, without a server.

The same code answers the analysis service's CompareRuns, GradientFlow and
RenderComparison (services.analysis).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from services.analysis.options import DEFAULT_GROUP_BY, DEFAULT_RANK_BY
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
        help="also compare running and failed runs (left out by default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--bootstrap-samples", type=int, default=10_000, help="bootstrap resamples (default 10000)"
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


def run(args: argparse.Namespace) -> int:
    """Compare, print, and write the plot when asked."""
    from runstore import RunStore
    from services.analysis.compare import Selection, compare, gradient_flow, select
    from services.analysis.report import format_comparison, to_jsonable

    store = RunStore(args.runs)
    selection = Selection(
        experiment=args.experiment,
        group_by=args.by,
        groups=parse_groups(args.group),
        where=tuple(args.where),
        include_unfinished=args.include_unfinished,
    )
    groups = select(store, selection)
    comparison = compare(
        groups,
        target=args.target,
        rank_by=args.rank_by,
        bootstrap_seed=args.seed,
        bootstrap_samples=args.bootstrap_samples,
    )
    flows = gradient_flow(groups)
    if args.plot:
        from services.analysis.plots import render_png

        png = render_png(groups, flows, width=args.width, height=args.height)
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        args.plot.write_bytes(png)
    if args.json:
        out = {"comparison": to_jsonable(comparison), "gradient_flow": to_jsonable(flows)}
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(format_comparison(comparison, flows))
        if args.plot:
            print(f"\nplot: {args.plot} ({args.width}x{args.height} px)")
    return 0
