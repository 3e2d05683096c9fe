"""A fair optimizer comparison (DeepOBS, AlgoPerf): tune each optimizer's learning rate on
the same budget, then rerun every optimizer at its tuned rate with several seeds.

For each optimizer a Tune sweep searches `optimizer.lr` on a log scale (Optuna's TPE by
default) with the same number of trials, scored on validation accuracy, into
`<experiment>-lr-<optimizer>`. The tuned comparison is then one grid sweep into
`<experiment>`: an axis `optimizer` whose values are {name, lr} pairs, times the seeds.
Beside it, unless one is given, the default-rate comparison (`optimizer.lr` null) with
the same seeds, into `<experiment>-default`; `stride compare` reads all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import ConfigError
from pipeline.search import Axis, build_plan
from pipeline.sweep import Sweep, check_new_experiment, prepare, run_sweep
from pipeline.sweep_results import SweepRun, best_run
from runstore import StoreLocation, check_name

COURSE_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")


@dataclass(frozen=True)
class TuningPlan:
    optimizers: tuple[str, ...] = COURSE_OPTIMIZERS
    lr_low: float = 1e-4
    lr_high: float = 1.0
    trials: int = 8  # learning rates tried per optimizer: the same budget for each
    seeds: int = 3  # seeds of each tuned (and default-rate) rerun
    search: str = "optuna"  # or random
    default_rates: bool = True  # also run the default-rate comparison


@dataclass
class TuningResult:
    tuned_lr: dict[str, float] = field(default_factory=dict)
    tuning: dict[str, list[SweepRun]] = field(default_factory=dict)  # per optimizer
    tuned: list[SweepRun] = field(default_factory=list)
    default: list[SweepRun] = field(default_factory=list)


def experiments(experiment: str, plan: TuningPlan) -> dict[str, str]:
    """Every experiment the comparison writes, by role."""
    names = {f"lr-{o}": check_name("experiment", f"{experiment}-lr-{o}") for o in plan.optimizers}
    names["tuned"] = check_name("experiment", experiment)
    if plan.default_rates:
        names["default"] = check_name("experiment", f"{experiment}-default")
    return names


def prepare_tuning(
    base: dict[str, Any],
    overrides: list[str],
    plan: TuningPlan,
    store: StoreLocation,
    experiment: str,
) -> dict[str, Sweep]:
    """Every sweep but the tuned rerun (whose rates are not known yet), checked before
    Ray starts; also checks that no experiment exists and that the rerun will validate."""
    from pipeline.optim import OPTIMIZERS

    if not plan.optimizers:
        raise ConfigError("--optimizers: give at least one optimizer")
    unknown = [o for o in plan.optimizers if o not in OPTIMIZERS.names()]
    if unknown:
        raise ConfigError(
            f"unknown optimizer {unknown[0]!r}; allowed: {', '.join(OPTIMIZERS.names())}"
        )
    if len(set(plan.optimizers)) != len(plan.optimizers):
        raise ConfigError("--optimizers: an optimizer is given twice")
    if not 0 < plan.lr_low < plan.lr_high:
        raise ConfigError(f"--lr-range {plan.lr_low:g},{plan.lr_high:g}: need 0 < low < high")
    if plan.search not in ("optuna", "random"):
        raise ConfigError(f"--search {plan.search!r}: the rates are tuned by optuna or random")
    for name in experiments(experiment, plan).values():
        check_new_experiment(store, name)
    lr = Axis("optimizer.lr", "loguniform", low=plan.lr_low, high=plan.lr_high)
    sweeps: dict[str, Sweep] = {}
    for o in plan.optimizers:
        tuning = build_plan([lr], search=plan.search, samples=plan.trials, metric="val_accuracy")
        sweeps[f"lr-{o}"] = prepare(base, [*overrides, f"optimizer.name={o}"], tuning)
    # the rerun's shape, at the range's ends: the same checks it will meet
    for rate in (plan.lr_low, plan.lr_high):
        _tuned_sweep(base, overrides, plan, dict.fromkeys(plan.optimizers, rate))
    if plan.default_rates:
        names = Axis("optimizer.name", "grid", plan.optimizers)
        default = build_plan([names], seeds=plan.seeds)
        sweeps["default"] = prepare(base, [*overrides, "optimizer.lr=null"], default)
    return sweeps


def _tuned_sweep(
    base: dict[str, Any], overrides: list[str], plan: TuningPlan, rates: dict[str, float]
) -> Sweep:
    pairs = tuple({"name": o, "lr": rates[o]} for o in plan.optimizers)
    return prepare(
        base, overrides, build_plan([Axis("optimizer", "grid", pairs)], seeds=plan.seeds)
    )


def run_tuning(
    base: dict[str, Any],
    overrides: list[str],
    plan: TuningPlan,
    sweeps: dict[str, Sweep],
    *,
    store: StoreLocation | str | os.PathLike[str],
    experiment: str,
    max_concurrent: int,
    view: Callable[[str], Any] | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> TuningResult:
    """Tune each optimizer's rate, rerun the tuned rates with seeds, and the default rates
    (Ray must be initialised). `view(name)` makes the live view of each sweep."""
    names = experiments(experiment, plan)
    result = TuningResult()
    for o in plan.optimizers:
        role = f"lr-{o}"
        say(
            f"tuning {o}: {plan.trials} learning rates in [{plan.lr_low:g}, {plan.lr_high:g}] "
            f"({plan.search}) into {names[role]}"
        )
        runs = run_sweep(
            sweeps[role],
            store=store,
            experiment=names[role],
            max_concurrent=max_concurrent,
            view=view(names[role]) if view else None,
        )
        best = best_run(runs, "val_accuracy")
        if best is None:
            raise RuntimeError(f"every learning rate of {o} failed; see {names[role]}")
        result.tuning[o] = runs
        result.tuned_lr[o] = float(best.grid["optimizer.lr"])
        say(
            f"{o}: best lr {result.tuned_lr[o]:.3g} (val accuracy {best.summary.val_accuracy:.4f})"
            if best.summary
            else f"{o}: best lr {result.tuned_lr[o]:.3g}"
        )
    tuned = _tuned_sweep(base, overrides, plan, result.tuned_lr)
    say(
        f"tuned comparison: {len(plan.optimizers)} optimizers x {plan.seeds} seeds "
        f"into {names['tuned']}"
    )
    result.tuned = run_sweep(
        tuned,
        store=store,
        experiment=names["tuned"],
        max_concurrent=max_concurrent,
        view=view(names["tuned"]) if view else None,
    )
    if plan.default_rates:
        say(
            f"default-rate comparison: {len(plan.optimizers)} optimizers x {plan.seeds} seeds "
            f"into {names['default']}"
        )
        result.default = run_sweep(
            sweeps["default"],
            store=store,
            experiment=names["default"],
            max_concurrent=max_concurrent,
            view=view(names["default"]) if view else None,
        )
    return result
