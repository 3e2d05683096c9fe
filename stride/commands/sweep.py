"""stride sweep: a search over config values on Ray Tune (grid, random or Optuna, ASHA
optional), each trial one run in the store, then a summary table and the best run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stride.commands._paths import local_path
from stride.commands.train import add_config_arguments, overrides_of

NAME = "sweep"
HELP = "search config values on Ray Tune (grid, random, Optuna; ASHA), one run per trial"
ORDER = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    for action in parser._actions:  # --resume reads the config from the sweep it resumes
        if action.dest == "config":
            action.required = False
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a grid axis, e.g. --grid optimizer.name=sgd,adam (repeatable)",
    )
    parser.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=DIST",
        help="a sampled axis: loguniform(a,b), uniform(a,b), randint(a,b) or choice(a,b,c), "
        "e.g. --space optimizer.lr=loguniform(1e-4,1e-1) (repeatable)",
    )
    parser.add_argument(
        "--sweep-file",
        type=local_path,
        metavar="YAML",
        help="grid and space axes and settings in a file (keys grid, space, search, samples, "
        "seeds, scheduler, metric, grace_epochs); flags override it",
    )
    parser.add_argument(
        "--search",
        help="searcher: grid (default; every combination), random, or optuna (TPE)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        help="configurations random or optuna search tries (default 1)",
    )
    parser.add_argument(
        "--seeds", type=int, help="seeds per configuration, paired across them (default 1)"
    )
    parser.add_argument(
        "--scheduler", help="none (default), or asha: stop hopeless trials after --grace-epochs"
    )
    parser.add_argument(
        "--metric",
        help="per-epoch figure the scheduler and searcher follow (default val_accuracy)",
    )
    parser.add_argument(
        "--grace-epochs", type=int, help="epochs every trial trains before ASHA may stop it"
    )
    parser.add_argument(
        "--resume",
        metavar="EXPERIMENT",
        help="finish the sweep of EXPERIMENT after its driver died: finished trials are "
        "kept, running ones go on from their last checkpoint",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="trials at once (default: as many as the cluster's resources allow)",
    )
    parser.add_argument(
        "--select-by",
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
    parser.add_argument(
        "--allow-failed-trials",
        action="store_true",
        help="exit 0 even when trials failed outside the training (a worker lost, an error); "
        "by default the sweep is incomplete then and exits 1. Diverged trials are results "
        "and never fail the sweep",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def plan_from_args(args: argparse.Namespace) -> Any:
    """The search the flags (and --sweep-file) describe, checked."""
    from pipeline.search import build_plan, parse_grid, parse_space, read_sweep_file

    settings: dict[str, Any] = read_sweep_file(args.sweep_file) if args.sweep_file else {}
    axes = [*settings.pop("axes", []), *parse_grid(args.grid), *parse_space(args.space)]
    flags = {
        "search": args.search,
        "samples": args.samples,
        "seeds": args.seeds,
        "scheduler": args.scheduler,
        "metric": args.metric,
        "grace_epochs": args.grace_epochs,
    }
    return build_plan(axes, **{**settings, **{k: v for k, v in flags.items() if v is not None}})


def prepare_sweep(args: argparse.Namespace) -> tuple[Any, str, str, int | None]:
    """(sweep, experiment, select_by, max_concurrent), every check done before Ray starts."""
    from pipeline.config import ConfigError, read_config_file
    from pipeline.sweep import check_new_experiment, load_sweep, prepare

    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if args.resume:
        given = [
            f
            for f in ("config", "sweep_file", "search", "samples", "scheduler")
            if getattr(args, f)
        ]
        if given or args.grid or args.space or args.overrides:
            raise ConfigError(
                "--resume takes the sweep as it was started; drop --config, --grid, --space, "
                "--set and the search flags"
            )
        sweep, saved = load_sweep(args.runs, args.resume)
        select_by = args.select_by or saved.get("select_by", "val_accuracy")
        return sweep, args.resume, select_by, args.max_concurrent or saved.get("max_concurrent")
    if args.config is None:
        raise ConfigError("--config is required (or --resume EXPERIMENT)")
    sweep = prepare(read_config_file(args.config), overrides_of(args), plan_from_args(args))
    check_new_experiment(args.runs, args.experiment)
    return sweep, args.experiment, args.select_by or "val_accuracy", args.max_concurrent


def run(args: argparse.Namespace) -> int:
    from pipeline.ray_train import ensure_ray
    from pipeline.sweep import concurrency, run_sweep
    from pipeline.sweep_results import SweepView, best_run, format_table, summarise

    sweep, experiment, select_by, max_concurrent = prepare_sweep(args)
    resources = ensure_ray(args.address)
    limit = concurrency(sweep.variants, resources)
    if max_concurrent:
        limit = min(limit, max_concurrent)
    plan = sweep.plan
    print(
        f"[sweep] {'resuming ' if args.resume else ''}{plan.trials} trials ({plan.search} search"
        f"{', ' + plan.scheduler if plan.scheduler != 'none' else ''}) into "
        f"{args.runs.child(experiment)}, up to {limit} at a time",
        file=sys.stderr,
    )
    runs = run_sweep(
        sweep,
        store=args.runs,
        experiment=experiment,
        max_concurrent=limit,
        select_by=select_by,
        view=SweepView([]),
        resume=bool(args.resume),
    )
    rows = summarise(runs)
    best = best_run(runs, select_by)
    exported = None
    if args.export_best and best is not None:
        from pipeline.export import export_run
        from runstore import RunDir

        exported = export_run(RunDir.at(args.runs, experiment, best.run_id), args.export_best)
    if args.json:
        print(
            json.dumps(
                {
                    "groups": rows,
                    "best": best.run_id if best else None,
                    "selected_by": select_by,
                    "exported": str(exported.path) if exported else None,
                },
                indent=2,
            )
        )
    else:
        print(format_table(rows))
        if best is not None and best.summary is not None:
            print(
                f"best run by {select_by}: {best.run_id} ({select_by} "
                f"{getattr(best.summary, select_by):.4f}, test accuracy "
                f"{best.summary.test_accuracy:.4f})"
            )
        if exported is not None:
            print(f"exported: {exported.path} (version {exported.version})")
    return _exit_status(runs, args.allow_failed_trials)


def _exit_status(runs: list[Any], allow_failed: bool) -> int:
    """0 when every trial has a result (completed, stopped, diverged); 1 when a trial
    failed outside the training, unless `allow_failed`: the sweep is incomplete, and a
    script or CI job that reads only the exit status must know."""
    from runstore import diverged

    diverging = [r for r in runs if r.state == "failed" and diverged(r.summary)]
    failed = [r for r in runs if r.state in ("failed", "pending", "running") and r not in diverging]
    for r in diverging:
        print(f"diverged (a result, counted by stride compare): {r.run_id}", file=sys.stderr)
    for r in failed:
        print(f"failed: {r.run_id}: {r.error or r.state}", file=sys.stderr)
    if not failed:
        return 0
    what = f"{len(failed)} of {len(runs)} trials failed outside the training"
    if allow_failed:
        print(f"[sweep] {what}; exit 0 (--allow-failed-trials)", file=sys.stderr)
        return 0
    print(
        f"[sweep] {what} (reasons above): the sweep is incomplete, exit 1; "
        "--allow-failed-trials accepts an incomplete sweep",
        file=sys.stderr,
    )
    return 1
