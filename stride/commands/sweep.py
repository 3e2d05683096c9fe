"""stride sweep: grid values x seeds as concurrent Ray Train runs, then a summary table."""

from __future__ import annotations

import argparse
import json
import sys

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
        "--export-best",
        metavar="REPO",
        help="export the run with the best test accuracy into this repository",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from pipeline.config import ConfigError
    from pipeline.ray_train import ensure_ray
    from pipeline.runstore import open_store
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

    try:
        base = yaml.safe_load(Path(args.config).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {args.config}") from None
    runs = expand(base, overrides_of(args), parse_grid(args.grid), args.seeds)
    resources = ensure_ray(args.address)
    limit = concurrency(runs, resources)
    if args.max_concurrent:
        limit = min(limit, args.max_concurrent)
    print(
        f"[sweep] {len(runs)} runs into {open_store(args.runs).child(args.experiment).display}, "
        f"{limit} at a time",
        file=sys.stderr,
    )
    run_sweep(
        runs,
        store=args.runs,
        experiment=args.experiment,
        max_concurrent=limit,
        view=SweepView(runs),
    )
    rows = summarise(runs)
    best = best_run(runs)
    exported = None
    if args.export_best and best is not None:
        from pipeline.export import export_run
        from pipeline.runstore import RunDir

        exported = export_run(RunDir.at(args.runs, args.experiment, best.run_id), args.export_best)
    if args.json:
        print(
            json.dumps(
                {
                    "groups": rows,
                    "best": best.run_id if best else None,
                    "exported": str(exported.path) if exported else None,
                },
                indent=2,
            )
        )
    else:
        print(format_table(rows))
        if best is not None:
            print(f"best run: {best.run_id} (test accuracy {best.summary['test_accuracy']:.4f})")
        if exported is not None:
            print(f"exported: {exported.path} (version {exported.version})")
    failed = [r for r in runs if r.state == "failed"]
    for r in failed:
        print(f"failed: {r.run_id}: {r.error}", file=sys.stderr)
    return 1 if failed and len(failed) == len(runs) else 0
