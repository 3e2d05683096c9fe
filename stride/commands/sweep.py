"""stride sweep: grid values x seeds as concurrent Ray Train runs, then a summary table."""

from __future__ import annotations

import argparse
import json
import sys

from stride.commands._paths import local_path
from stride.commands.train import add_config_arguments, overrides_of

NAME = "sweep"
HELP = "train every combination of grid values and seeds concurrently on Ray"
ORDER = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a grid axis, e.g. --grid optimizer.name=sgd,adam (repeatable)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per grid value (default 1)")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="runs at once (default: as many as the cluster's resources allow)",
    )
    parser.add_argument(
        "--select-by",
        default="val_accuracy",
        choices=["val_accuracy", "val_loss"],
        help="validation figure that picks the best run (default val_accuracy); the test "
        "set is only reported, never used to choose",
    )
    parser.add_argument(
        "--export-best",
        metavar="REPO",
        type=local_path,
        help="export the best run (see --select-by) into this model repository",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from pipeline.config import read_config_file
    from pipeline.ray_train import ensure_ray
    from pipeline.sweep import (
        SweepView,
        best_run,
        concurrency,
        expand,
        format_table,
        parse_grid,
        run_sweep,
        summarise,
    )

    base = read_config_file(args.config)
    runs = expand(base, overrides_of(args), parse_grid(args.grid), args.seeds)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    resources = ensure_ray(args.address)
    limit = concurrency(runs, resources)
    if args.max_concurrent:
        limit = min(limit, args.max_concurrent)
    print(
        f"[sweep] {len(runs)} runs into {args.runs.child(args.experiment)}, "
        f"up to {limit} at a time",
        file=sys.stderr,
    )
    run_sweep(
        runs,
        store=args.runs,
        experiment=args.experiment,
        max_concurrent=limit,
        resources=resources,
        view=SweepView(runs),
    )
    rows = summarise(runs)
    best = best_run(runs, args.select_by)
    exported = None
    if args.export_best and best is not None:
        from pipeline.export import export_run
        from runstore import RunDir

        exported = export_run(RunDir.at(args.runs, args.experiment, best.run_id), args.export_best)
    if args.json:
        print(
            json.dumps(
                {
                    "groups": rows,
                    "best": best.run_id if best else None,
                    "selected_by": args.select_by,
                    "exported": str(exported.path) if exported else None,
                },
                indent=2,
            )
        )
    else:
        print(format_table(rows))
        if best is not None and best.summary is not None:
            print(
                f"best run by {args.select_by}: {best.run_id} ({args.select_by} "
                f"{getattr(best.summary, args.select_by):.4f}, test accuracy "
                f"{best.summary.test_accuracy:.4f})"
            )
        if exported is not None:
            print(f"exported: {exported.path} (version {exported.version})")
    failed = [r for r in runs if r.state == "failed"]
    for r in failed:
        print(f"failed: {r.run_id}: {r.error}", file=sys.stderr)
    return 1 if failed and len(failed) == len(runs) else 0
