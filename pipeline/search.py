"""What a sweep searches: axes, searcher, scheduler, budget; parsed and checked before
Ray starts, so that every bad input is one line and nothing has run.

An axis is a config key and either grid values (`--grid optimizer.name=sgd,adam`,
every value is run) or a distribution (`--space optimizer.lr=loguniform(1e-4,1e-1)`,
also `uniform(a,b)`, `randint(a,b)` (a <= n < b) and `choice(a,b,c)`), sampled by the
searcher. `SweepPlan` holds the whole search; `check_plan` refuses what the chosen
searcher or scheduler cannot take. This module imports neither torch nor Ray: the Ray
Tune objects are built from a plan by `tune_space`, `make_searcher` and
`make_scheduler`, which import Ray when they are called.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ConfigError, read_config_file

SEARCHERS = ("grid", "random", "optuna")
SCHEDULERS = ("none", "asha")
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
# Figures the trial reports every epoch: what a scheduler or searcher may follow, and
# whether more is better. The test split is never among them.
EPOCH_METRICS = {
    "val_accuracy": True,
    "val_loss": False,
    "train_accuracy": True,
    "train_loss": False,
}


@dataclass(frozen=True)
class Axis:
    """One searched config key: grid values, or a distribution to sample."""

    key: str  # dotted config key, e.g. optimizer.lr
    kind: str  # grid, or one of DISTRIBUTIONS
    values: tuple[Any, ...] = ()  # grid and choice
    low: float = 0.0  # loguniform, uniform, randint (inclusive)
    high: float = 0.0  # exclusive for randint

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    def describe(self) -> str:
        if self.kind in ("grid", "choice"):
            inner = ",".join(str(v) for v in self.values)
            return f"{self.key}={inner}" if self.is_grid else f"{self.key}=choice({inner})"
        return f"{self.key}={self.kind}({self.low:g},{self.high:g})"

    def corners(self) -> list[Any]:
        """The values that bound what the searcher can pick: each config made from them
        is validated before Ray starts."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        if self.kind == "randint":
            return [int(self.low), int(self.high) - 1]
        return [self.low, self.high]


@dataclass(frozen=True)
class SweepPlan:
    """The whole search. `samples` is the searcher's budget of configurations (random
    and optuna; grid runs every combination once); every configuration runs `seeds`
    times, seeds paired (seed, seed + 1, ...) across configurations."""

    axes: tuple[Axis, ...] = ()
    search: str = "grid"
    samples: int = 1
    seeds: int = 1
    scheduler: str = "none"
    metric: str = "val_accuracy"  # what the scheduler and searcher follow, per epoch
    grace_epochs: int = 1  # ASHA: epochs every trial trains before it can be stopped
    reduction_factor: int = 2  # ASHA: keep the top 1/factor of each rung

    @property
    def mode(self) -> str:
        return "max" if EPOCH_METRICS[self.metric] else "min"

    @property
    def grid_size(self) -> int:
        return math.prod(len(a.values) for a in self.axes if a.is_grid)

    @property
    def trials(self) -> int:
        """How many trials the sweep runs in all."""
        configurations = self.grid_size if self.search == "grid" else self.samples
        if self.search == "random":
            configurations *= self.grid_size  # Tune crosses grid axes with the samples
        return configurations * self.seeds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPlan:
        axes = tuple(
            Axis(a["key"], a["kind"], tuple(a["values"]), a["low"], a["high"])
            for a in data.get("axes", ())
        )
        return cls(**{**data, "axes": axes})


# ------------------------------------------------------------------ parsing


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _value(text: str) -> Any:
    """A value read as YAML, plus the exponent floats YAML 1.1 leaves as strings (1e-3)."""
    text = text.strip()
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    try:
        return yaml.safe_load(text) if text else ""
    except (yaml.YAMLError, ValueError):
        return text


def _number(text: str, where: str) -> float:
    value = _value(text)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {text.strip()!r} is not a finite number")
    return float(value)


def parse_grid(items: list[str]) -> list[Axis]:
    """`key=v1,v2,...` items -> grid axes; values are read as YAML (0.1, true, adam)."""
    axes: list[Axis] = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or not raw:
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2 (e.g. optimizer.name=sgd,adam)")
        axes.append(Axis(key, "grid", tuple(_value(v) for v in raw.split(","))))
    return axes


_DISTRIBUTION_RE = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$", re.S)


def parse_distribution(key: str, text: str) -> Axis:
    """`loguniform(1e-4,1e-1)`, `uniform(a,b)`, `randint(a,b)` or `choice(a,b,c)`."""
    where = f"--space {key}"
    match = _DISTRIBUTION_RE.match(text)
    if match is None or match.group(1) not in DISTRIBUTIONS:
        raise ConfigError(
            f"{where}={text!r}: expected one of {', '.join(f'{d}(...)' for d in DISTRIBUTIONS)}"
            ", e.g. loguniform(1e-4,1e-1)"
        )
    kind, args = match.group(1), [a for a in match.group(2).split(",")]
    if kind == "choice":
        values = tuple(_value(a) for a in args if a.strip())
        if len(values) < 2:
            raise ConfigError(f"{where}: choice needs at least two values, got {text!r}")
        return Axis(key, "choice", values)
    if len(args) != 2:
        raise ConfigError(f"{where}: {kind} takes two bounds (low, high), got {text!r}")
    low, high = (_number(a, where) for a in args)
    if low >= high:
        raise ConfigError(f"{where}: {kind}({low:g},{high:g}) needs low < high")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {low:g}")
    if kind == "randint" and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where}: randint bounds must be integers, got {text!r}")
    return Axis(key, kind, (), low, high)


def parse_space(items: list[str]) -> list[Axis]:
    """`key=distribution(...)` items -> axes."""
    axes = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or not raw.strip():
            raise ConfigError(
                f"--space {item!r}: expected key=distribution, "
                "e.g. optimizer.lr=loguniform(1e-4,1e-1)"
            )
        axes.append(parse_distribution(key, raw))
    return axes


SWEEP_FILE_KEYS = (
    "grid",
    "space",
    "search",
    "samples",
    "seeds",
    "scheduler",
    "metric",
    "grace_epochs",
)


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """A sweep YAML: `grid` (key: [values]) and `space` (key: "loguniform(1e-4,1e-1)"),
    plus any of search, samples, seeds, scheduler, metric, grace_epochs. Returns the
    settings with `axes` parsed; command-line flags override them."""
    data = read_config_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a sweep file is a mapping with keys {', '.join(SWEEP_FILE_KEYS)}"
        )
    unknown = sorted(set(data) - set(SWEEP_FILE_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(SWEEP_FILE_KEYS)}"
        )
    axes: list[Axis] = []
    for section in ("grid", "space"):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: {section} is a mapping of config keys")
        for key, spec in entries.items():
            if section == "grid":
                if not isinstance(spec, list) or not spec:
                    raise ConfigError(f"{path}: grid.{key} must be a non-empty list of values")
                axes.append(Axis(str(key), "grid", tuple(spec)))
            else:
                if not isinstance(spec, str):
                    raise ConfigError(
                        f"{path}: space.{key} must be a string such as 'loguniform(1e-4,1e-1)'"
                    )
                axes.append(parse_distribution(str(key), spec))
    settings = {k: v for k, v in data.items() if k not in ("grid", "space")}
    settings["axes"] = axes
    return settings


def build_plan(axes: list[Axis], **settings: Any) -> SweepPlan:
    """A plan from parsed axes and settings (None means the default), checked."""
    given = {k: v for k, v in settings.items() if v is not None}
    plan = SweepPlan(axes=tuple(axes), **given)
    check_plan(plan)
    return plan


def check_plan(plan: SweepPlan) -> None:
    """Refuse, in one line each, what cannot run: unknown names, a budget below one, a
    space the searcher cannot take, a scheduler without an epoch metric."""
    keys = [a.key for a in plan.axes]
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError(f"sweep axis {key} is given twice")
        if key == "seed":
            raise ConfigError(
                "seed cannot be an axis: use --seeds N (seeds are paired across trials)"
            )
    if plan.search not in SEARCHERS:
        raise ConfigError(f"unknown searcher {plan.search!r}; allowed: {', '.join(SEARCHERS)}")
    if plan.scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {plan.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
    if plan.metric not in EPOCH_METRICS:
        raise ConfigError(
            f"--metric {plan.metric!r} is not reported every epoch; allowed: "
            f"{', '.join(EPOCH_METRICS)} (the test split is never searched on)"
        )
    for name, value in (("--samples", plan.samples), ("--seeds", plan.seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(plan.grace_epochs, int) or plan.grace_epochs < 1:
        raise ConfigError(f"--grace-epochs must be an integer >= 1, got {plan.grace_epochs!r}")
    sampled = [a for a in plan.axes if not a.is_grid]
    grid = [a for a in plan.axes if a.is_grid]
    if plan.search == "grid":
        if sampled:
            raise ConfigError(
                f"--search grid cannot sample {sampled[0].describe()}: use --search random or "
                "optuna, or give its values with --grid"
            )
        if plan.samples != 1:
            raise ConfigError(
                "--samples is the budget of random or optuna search; grid runs each value once"
            )
    if plan.search == "optuna":
        if grid:
            raise ConfigError(
                f"--search optuna cannot take the grid axis {grid[0].describe()}: give it as "
                f"--space {grid[0].key}=choice(...) or sweep it with --search grid/random"
            )
        if not sampled:
            raise ConfigError("--search optuna needs at least one --space axis to search")
    if plan.search == "random" and not sampled:
        raise ConfigError("--search random needs at least one --space axis to sample")


def check_scheduler(plan: SweepPlan, epochs: int) -> None:
    """ASHA needs epochs to cut at: a grace period shorter than the run."""
    if plan.scheduler == "asha" and plan.grace_epochs >= epochs:
        raise ConfigError(
            f"--grace-epochs {plan.grace_epochs} leaves ASHA nothing to stop in "
            f"{epochs}-epoch runs: use fewer grace epochs or more training.epochs"
        )


# ------------------------------------------------------------------ Ray Tune objects


def tune_space(plan: SweepPlan) -> dict[str, Any]:
    """The axes as Ray Tune's search space (keys are the dotted config keys)."""
    from ray import tune

    space: dict[str, Any] = {}
    for a in plan.axes:
        if a.kind == "grid":
            space[a.key] = tune.grid_search(list(a.values))
        elif a.kind == "choice":
            space[a.key] = tune.choice(list(a.values))
        elif a.kind == "loguniform":
            space[a.key] = tune.loguniform(a.low, a.high)
        elif a.kind == "uniform":
            space[a.key] = tune.uniform(a.low, a.high)
        else:
            space[a.key] = tune.randint(int(a.low), int(a.high))
    return space


def make_searcher(plan: SweepPlan, seed: int, max_concurrent: int) -> Any:
    """Tune's searcher for the plan: grid and random through the basic variant generator
    (sampled values held constant across seeds, so seeds pair), Optuna's TPE repeated
    once per seed (the mean over seeds is what Optuna sees)."""
    from ray.tune.search import ConcurrencyLimiter, Repeater
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if plan.search in ("grid", "random"):
        return BasicVariantGenerator(
            constant_grid_search=True, random_state=seed, max_concurrent=max_concurrent
        )
    import optuna
    from optuna.samplers import TPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from ray.tune.search.optuna import OptunaSearch

    searcher: Any = OptunaSearch(sampler=TPESampler(seed=seed), metric=plan.metric, mode=plan.mode)
    if plan.seeds > 1:
        searcher = Repeater(searcher, repeat=plan.seeds, set_index=True)
    # whole groups of seeds at once, so that a repeated configuration is not starved
    limit = max(plan.seeds, max_concurrent - max_concurrent % plan.seeds)
    return ConcurrencyLimiter(searcher, max_concurrent=limit)


def make_scheduler(plan: SweepPlan, epochs: int) -> Any:
    """ASHA on the epoch counter, or FIFO (nothing stopped)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    if plan.scheduler != "asha":
        return FIFOScheduler()
    return AsyncHyperBandScheduler(
        time_attr="epoch",
        max_t=epochs,
        grace_period=plan.grace_epochs,
        reduction_factor=plan.reduction_factor,
    )


def format_value(value: Any) -> str:
    """A value as it appears in a label: a float as written when short (0.01), else to
    4 significant digits (0.001234, 1e06)."""
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 8 else format(value, ".4g").replace("e+", "e")
    return str(value)
