"""A fair optimizer comparison as DeepOBS prescribes it (Schneider et al. 2019): tune each
optimizer's learning rate on the same budget, then evaluate every optimizer at its tuned
rate on fresh seeds.

- **Tuning**: for each optimizer a Tune sweep scores learning rates from
  [lr_low, lr_high] on validation accuracy, into `<experiment>-lr-<optimizer>`: a
  log-spaced grid of `trials` rates by default (the same rates for every optimizer),
  or `trials` rates drawn by random search or Optuna's TPE. TPE draws its first
  `TPE_STARTUP_TRIALS` at random, so it is refused with fewer trials than that plus
  one: it would be a random search under another name. Each rate is scored on
  `tuning_seeds` seeds (seed, seed + 1, ...: the config's seed on); the tuned rate has
  the best mean validation accuracy over them (a diverged or failed trial scores 0).
- **Evaluation**: one grid sweep into `<experiment>`, an axis `optimizer` whose values
  are {name, lr} pairs, on `seeds` (at least `MIN_EVALUATION_SEEDS`) seeds that follow
  the tuning seeds, so no evaluation seed was seen while tuning. Beside it, unless
  left out, the same seeds at the default rates (`optimizer.lr` null) into
  `<experiment>-default`; `stride compare` reads all of them.
- **The plan is recorded**: `tuning.json` in `<experiment>` holds the search, the
  rates tried, both sets of seeds, each optimizer's tuning scores and chosen rate.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.config import ConfigError, parse_config
from pipeline.search import Axis, build_plan
from runstore import StoreLocation, check_name, open_files, utc_now

if TYPE_CHECKING:  # Ray Tune is imported where a sweep is prepared or run, not for --help
    from pipeline.sweep import Sweep
    from pipeline.sweep_results import SweepRun

COURSE_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
SEARCHES = ("grid", "random", "optuna")
TPE_STARTUP_TRIALS = 10  # Optuna's TPESampler n_startup_trials: random before it models
MIN_EVALUATION_SEEDS = 5  # DeepOBS evaluates the tuned setting on 10; 5 at the least
PLAN_FILE = "tuning.json"


@dataclass(frozen=True)
class TuningPlan:
    optimizers: tuple[str, ...] = COURSE_OPTIMIZERS
    lr_low: float = 1e-4
    lr_high: float = 1.0
    trials: int = 9  # learning rates tried per optimizer: the same budget for each
    seeds: int = MIN_EVALUATION_SEEDS  # evaluation seeds of each tuned (and default) rerun
    search: str = "grid"  # a log-spaced grid; or random, or optuna (TPE)
    tuning_seeds: int = 1  # seeds each tried rate is scored on (disjoint from `seeds`)
    default_rates: bool = True  # also run the default-rate comparison

    def rates(self) -> tuple[float, ...]:
        """The grid search's rates: `log_grid(lr_low, lr_high, trials)`."""
        return log_grid(self.lr_low, self.lr_high, self.trials)


@dataclass
class TuningResult:
    tuned_lr: dict[str, float] = field(default_factory=dict)
    tuning: dict[str, list[SweepRun]] = field(default_factory=dict)  # per optimizer
    tuned: list[SweepRun] = field(default_factory=list)
    default: list[SweepRun] = field(default_factory=list)
    scores: dict[str, dict[float, float]] = field(default_factory=dict)  # mean val acc by rate


def log_grid(low: float, high: float, points: int) -> tuple[float, ...]:
    """`points` rates log-spaced from low to high inclusive, each rounded to two
    significant digits (1e-4, 3.2e-4, 1e-3, ...: values a name and a table show as
    they are), more where two would round to the same rate."""
    if points < 2:
        raise ConfigError(f"a grid of learning rates needs at least 2 points, not {points}")
    exact = [low * (high / low) ** (i / (points - 1)) for i in range(points)]
    for digits in range(2, 17):
        rates = tuple(min(max(float(f"{r:.{digits}g}"), low), high) for r in exact)
        if len(set(rates)) == points:
            return rates
    return tuple(exact)


def experiments(experiment: str, plan: TuningPlan) -> dict[str, str]:
    """Every experiment the comparison writes, by role."""
    names = {f"lr-{o}": check_name("experiment", f"{experiment}-lr-{o}") for o in plan.optimizers}
    names["tuned"] = check_name("experiment", experiment)
    if plan.default_rates:
        names["default"] = check_name("experiment", f"{experiment}-default")
    return names


def check_tuning(plan: TuningPlan) -> None:
    """Refuse, in one line each, a plan that would not compare the optimizers fairly."""
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
    if not (0 < plan.lr_low < plan.lr_high and math.isfinite(plan.lr_high)):
        raise ConfigError(f"--lr-range {plan.lr_low:g},{plan.lr_high:g}: need 0 < low < high")
    if plan.search not in SEARCHES:
        raise ConfigError(f"--search {plan.search!r}: the rates are tuned by {', '.join(SEARCHES)}")
    if plan.trials < 2:
        raise ConfigError(f"--trials {plan.trials}: a search needs at least 2 rates")
    if plan.search == "optuna" and plan.trials <= TPE_STARTUP_TRIALS:
        raise ConfigError(
            f"--trials {plan.trials} with --search optuna: Optuna's TPE draws its first "
            f"{TPE_STARTUP_TRIALS} trials at random, so this would be a random search; give "
            f"--trials {TPE_STARTUP_TRIALS + 1} or more, or --search grid (log-spaced rates) "
            "or --search random"
        )
    if plan.tuning_seeds < 1:
        raise ConfigError(f"--tuning-seeds {plan.tuning_seeds}: need at least 1")
    if plan.seeds < MIN_EVALUATION_SEEDS:
        raise ConfigError(
            f"--seeds {plan.seeds}: the tuned rates are evaluated on at least "
            f"{MIN_EVALUATION_SEEDS} fresh seeds (one seed's luck decides too much)"
        )


def seeds_of(base: dict[str, Any], overrides: list[str], plan: TuningPlan) -> dict[str, list[int]]:
    """The tuning seeds and the evaluation seeds that follow them: disjoint by design."""
    first = parse_config(base, overrides).seed
    tuning = list(range(first, first + plan.tuning_seeds))
    evaluation = list(range(tuning[-1] + 1, tuning[-1] + 1 + plan.seeds))
    return {"tuning": tuning, "evaluation": evaluation}


def prepare_tuning(
    base: dict[str, Any],
    overrides: list[str],
    plan: TuningPlan,
    store: StoreLocation,
    experiment: str,
) -> dict[str, Sweep]:
    """Every sweep but the tuned rerun (whose rates are not known yet), checked before
    Ray starts; also checks that no experiment exists and that the rerun will validate."""
    from pipeline.sweep import check_new_experiment, prepare

    check_tuning(plan)
    for name in experiments(experiment, plan).values():
        check_new_experiment(store, name)
    if plan.search == "grid":
        lr = Axis("optimizer.lr", "grid", plan.rates())
        settings: dict[str, Any] = {}
    else:
        lr = Axis("optimizer.lr", "loguniform", low=plan.lr_low, high=plan.lr_high)
        settings = {"search": plan.search, "samples": plan.trials}
    sweeps: dict[str, Sweep] = {}
    for o in plan.optimizers:
        tuning = build_plan([lr], seeds=plan.tuning_seeds, metric="val_accuracy", **settings)
        sweeps[f"lr-{o}"] = prepare(base, [*overrides, f"optimizer.name={o}"], tuning)
    # the rerun's shape, at the range's ends: the same checks it will meet
    for rate in (plan.lr_low, plan.lr_high):
        _tuned_sweep(base, overrides, plan, dict.fromkeys(plan.optimizers, rate))
    if plan.default_rates:
        names = Axis("optimizer.name", "grid", plan.optimizers)
        default = build_plan([names], seeds=plan.seeds)
        sweeps["default"] = prepare(base, _evaluation(base, overrides, plan, "null"), default)
    return sweeps


def _evaluation(
    base: dict[str, Any], overrides: list[str], plan: TuningPlan, lr: str | None = None
) -> list[str]:
    """The overrides of an evaluation sweep: its first seed after the tuning seeds."""
    first = seeds_of(base, overrides, plan)["evaluation"][0]
    return [*overrides, *([f"optimizer.lr={lr}"] if lr else []), f"seed={first}"]


def _tuned_sweep(
    base: dict[str, Any], overrides: list[str], plan: TuningPlan, rates: dict[str, float]
) -> Sweep:
    from pipeline.sweep import prepare

    pairs = tuple({"name": o, "lr": rates[o]} for o in plan.optimizers)
    return prepare(
        base,
        _evaluation(base, overrides, plan),
        build_plan([Axis("optimizer", "grid", pairs)], seeds=plan.seeds),
    )


def rate_scores(runs: list[SweepRun]) -> dict[float, float]:
    """Each tried rate's mean validation accuracy over its tuning seeds; a trial without
    one (diverged, failed) scores 0, the worst, so a rate that diverges on a seed pays."""
    by_rate: dict[float, list[float]] = {}
    for r in runs:
        acc = r.summary.val_accuracy if r.summary is not None else None
        score = acc if r.state == "completed" and acc is not None and math.isfinite(acc) else 0.0
        by_rate.setdefault(float(r.grid["optimizer.lr"]), []).append(score)
    return {lr: sum(v) / len(v) for lr, v in by_rate.items()}


def plan_record(
    base: dict[str, Any],
    overrides: list[str],
    plan: TuningPlan,
    experiment: str,
    result: TuningResult | None = None,
) -> dict[str, Any]:
    """What tuning.json holds: the plan, and once known, the scores and tuned rates."""
    seeds = seeds_of(base, overrides, plan)
    record: dict[str, Any] = {
        "schema": 1,
        "updated_at": utc_now(),
        "protocol": "DeepOBS: tune each optimizer's learning rate on the same budget, "
        "evaluate the tuned rates on fresh seeds",
        "optimizers": list(plan.optimizers),
        "search": plan.search,
        "lr_range": [plan.lr_low, plan.lr_high],
        "trials_per_optimizer": plan.trials,
        "rates": list(plan.rates()) if plan.search == "grid" else None,
        "selected_by": "mean val_accuracy over the tuning seeds (a failed trial scores 0)",
        "tuning_seeds": seeds["tuning"],
        "evaluation_seeds": seeds["evaluation"],
        "experiments": experiments(experiment, plan),
        "tuned": None,
    }
    if result is not None:
        record["tuned"] = {
            o: {"lr": result.tuned_lr[o], "scores": {repr(k): v for k, v in s.items()}}
            for o, s in result.scores.items()
        }
    return record


def write_plan(store: StoreLocation, experiment: str, record: dict[str, Any]) -> None:
    """tuning.json into the experiment's folder (beside its sweep.json)."""
    folder = open_files(store).child(experiment)
    folder.write_bytes(PLAN_FILE, json.dumps(record, indent=2).encode() + b"\n")


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
    """Tune each optimizer's rate, rerun the tuned rates on the evaluation seeds, and the
    default rates (Ray must be initialised). `view(name)` makes the live view of each
    sweep."""
    from pipeline.sweep import run_sweep

    store = StoreLocation.parse(store)
    names = experiments(experiment, plan)
    seeds = seeds_of(base, overrides, plan)
    result = TuningResult()
    tried = (
        f"the grid {', '.join(repr(r) for r in plan.rates())}"
        if plan.search == "grid"
        else f"{plan.trials} rates in [{plan.lr_low:g}, {plan.lr_high:g}] ({plan.search})"
    )
    write_plan(store, names["tuned"], plan_record(base, overrides, plan, experiment))
    for o in plan.optimizers:
        role = f"lr-{o}"
        say(f"tuning {o}: {tried}, seeds {seeds['tuning']}, into {names[role]}")
        runs = run_sweep(
            sweeps[role],
            store=store,
            experiment=names[role],
            max_concurrent=max_concurrent,
            view=view(names[role]) if view else None,
        )
        scores = rate_scores(runs)
        if not any(score > 0 for score in scores.values()):
            raise RuntimeError(f"every learning rate of {o} failed; see {names[role]}")
        result.tuning[o] = runs
        result.scores[o] = scores
        result.tuned_lr[o] = max(scores, key=lambda lr: (scores[lr], -lr))
        say(f"{o}: tuned lr {result.tuned_lr[o]!r} (mean val accuracy {max(scores.values()):.4f})")
    write_plan(store, names["tuned"], plan_record(base, overrides, plan, experiment, result))
    tuned = _tuned_sweep(base, overrides, plan, result.tuned_lr)
    say(
        f"tuned comparison: {len(plan.optimizers)} optimizers x seeds {seeds['evaluation']} "
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
            f"default-rate comparison: {len(plan.optimizers)} optimizers x seeds "
            f"{seeds['evaluation']} into {names['default']}"
        )
        result.default = run_sweep(
            sweeps["default"],
            store=store,
            experiment=names["default"],
            max_concurrent=max_concurrent,
            view=view(names["default"]) if view else None,
        )
    return result
