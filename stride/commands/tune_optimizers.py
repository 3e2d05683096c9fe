"""stride tune-optimizers: compare optimizers fairly, as DeepOBS prescribes: each at a
learning rate tuned on the same budget, evaluated on fresh seeds (pipeline.tuning),
beside the comparison at their default rates."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.tuning import MIN_EVALUATION_SEEDS, SEARCHES, TuningPlan
from stride.commands.train import add_config_arguments, overrides_of

defaults = TuningPlan()

NAME = "tune-optimizers"
HELP = (
    "tune each optimizer's learning rate on the same budget (Ray Tune), evaluate the tuned "
    "rates on fresh seeds, and compare with the default rates"
)
ORDER = 25


def _rate_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW,HIGH, e.g. 1e-4,1") from None
    return low, high


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.set_defaults(experiment="tuned-optimizers")
    parser.add_argument(
        "--optimizers",
        default="sgd,momentum,adagrad,rmsprop,adam",
        help="optimizers to compare, comma-separated (default: the course's five)",
    )
    parser.add_argument(
        "--lr-range",
        type=_rate_range,
        default=(1e-4, 1.0),
        metavar="LOW,HIGH",
        help="learning rates searched, on a log scale (default 1e-4,1)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=defaults.trials,
        help=f"learning rates tried per optimizer, the same for each (default {defaults.trials})",
    )
    parser.add_argument(
        "--search",
        default=defaults.search,
        choices=list(SEARCHES),
        help="grid (default): TRIALS log-spaced rates over --lr-range, the same for every "
        "optimizer; random; optuna (TPE: more than its 10 random start-up trials)",
    )
    parser.add_argument(
        "--tuning-seeds",
        type=int,
        default=defaults.tuning_seeds,
        help="seeds each tried rate is scored on, from the config's seed "
        f"(default {defaults.tuning_seeds})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=defaults.seeds,
        help=f"fresh seeds (after the tuning seeds) the tuned rates are evaluated on, at least "
        f"{MIN_EVALUATION_SEEDS} (default {defaults.seeds})",
    )
    parser.add_argument(
        "--no-default-rates",
        action="store_true",
        help="skip the comparison at the default rates (EXPERIMENT-default)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="trials at once (default: as many as the cluster's resources allow)",
    )
    parser.add_argument(
        "--target", type=float, default=0.95, help="target validation accuracy of the comparison"
    )


def _compare(runs: Any, experiment: str, target: float) -> None:
    from stride.commands import compare

    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    compare.run(parser.parse_args([experiment, "--runs", runs.uri, "--target", str(target)]))


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, read_config_file
    from pipeline.tuning import experiments, prepare_tuning, run_tuning, seeds_of

    plan = TuningPlan(
        optimizers=tuple(o.strip() for o in args.optimizers.split(",") if o.strip()),
        lr_low=args.lr_range[0],
        lr_high=args.lr_range[1],
        trials=args.trials,
        seeds=args.seeds,
        search=args.search,
        tuning_seeds=args.tuning_seeds,
        default_rates=not args.no_default_rates,
    )
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    base = read_config_file(args.config)
    overrides = overrides_of(args)
    sweeps = prepare_tuning(base, overrides, plan, args.runs, args.experiment)  # before Ray

    from pipeline.ray_train import ensure_ray
    from pipeline.sweep import concurrency
    from pipeline.sweep_results import SweepView

    resources = ensure_ray(args.address)
    limit = concurrency([c for s in sweeps.values() for c in s.variants], resources)
    if args.max_concurrent:
        limit = min(limit, args.max_concurrent)

    def say(text: str) -> None:
        print(f"[tune-optimizers] {text}", file=sys.stderr, flush=True)

    result = run_tuning(
        base,
        overrides,
        plan,
        sweeps,
        store=args.runs,
        experiment=args.experiment,
        max_concurrent=limit,
        view=lambda name: SweepView([], every=30.0),
        say=say,
    )
    names = experiments(args.experiment, plan)
    seeds = seeds_of(base, overrides, plan)
    print(
        f"tuned learning rates ({plan.trials} {plan.search} rates per optimizer over "
        f"{plan.lr_low:g}..{plan.lr_high:g}, chosen on mean validation accuracy over seeds "
        f"{seeds['tuning']}; evaluated on seeds {seeds['evaluation']}; the plan: "
        f"{names['tuned']}/tuning.json):"
    )
    for o, lr in result.tuned_lr.items():
        print(f"  {o:<10} {lr!r}")
    if plan.default_rates:
        print(f"\ndefault-rate comparison ({names['default']}):")
        _compare(args.runs, names["default"], args.target)
    print(f"\ntuned comparison ({names['tuned']}):")
    _compare(args.runs, names["tuned"], args.target)
    return 0
