"""Optimizers as small frozen records, and learning-rate schedules.

`list_optimizers()` feeds `stride models` and the analysis service, so the names
are spelled the same everywhere.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.registry import Registry
from pipeline.schema import ConfigError, OptimizerSpec, ScheduleSpec


@dataclass(frozen=True)
class OptimizerInfo:
    """A registered optimizer: the torch class and the defaults Stride gives it."""

    name: str
    cls: type[torch.optim.Optimizer]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")


def _add(name: str, cls: type[torch.optim.Optimizer], description: str, **defaults: Any) -> None:
    OPTIMIZERS.add(name, OptimizerInfo(name, cls, defaults, description), description)


_add("sgd", torch.optim.SGD, "plain stochastic gradient descent", lr=0.05)
_add("momentum", torch.optim.SGD, "SGD with heavy-ball momentum", lr=0.01, momentum=0.9)
_add(
    "nesterov", torch.optim.SGD, "SGD with Nesterov momentum", lr=0.01, momentum=0.9, nesterov=True
)
_add(
    "adagrad",
    torch.optim.Adagrad,
    "per-parameter steps scaled by summed squared gradients",
    lr=0.01,
)
_add(
    "rmsprop",
    torch.optim.RMSprop,
    "steps scaled by a moving average of squared gradients",
    lr=0.001,
    alpha=0.99,
)
_add("adam", torch.optim.Adam, "momentum plus RMSProp scaling, bias-corrected", lr=0.001)
_add("adamw", torch.optim.AdamW, "Adam with decoupled weight decay", lr=0.001, weight_decay=0.01)
_add("nadam", torch.optim.NAdam, "Adam with Nesterov momentum", lr=0.002)
_add("adamax", torch.optim.Adamax, "Adam with the infinity norm", lr=0.002)


def list_optimizers() -> list[OptimizerInfo]:
    """Every registered optimizer, in registration order."""
    return [entry.value for entry in OPTIMIZERS]


def _takes(info: OptimizerInfo, key: str) -> bool:
    return key in inspect.signature(info.cls).parameters


def _not_taken(spec: OptimizerSpec, key: str, value: Any) -> ConfigError:
    takers = [e.name for e in OPTIMIZERS if _takes(e.value, key)]
    hint = " (use betas for the adam family)" if key == "momentum" else ""
    return ConfigError(
        f"optimizer.{key}: {value!r} is not allowed; {spec.name} takes no {key}; "
        f"those that do: {', '.join(takers)}{hint}; or leave it null for the default"
    )


def optimizer_kwargs(spec: OptimizerSpec) -> dict[str, Any]:
    """The keyword arguments the optimizer is built with: defaults, then the config.

    A value the config sets (not null) is passed on as it is, 0 included. A key the
    optimizer does not take, or a combination torch would refuse, is a ConfigError;
    `pipeline.spec.validate` calls this, so it surfaces before anything trains.
    """
    info = OPTIMIZERS.get(spec.name)
    kwargs = dict(info.defaults)
    given = {
        "lr": spec.lr,
        "weight_decay": spec.weight_decay,
        "momentum": spec.momentum,
        "betas": spec.betas,
        "eps": spec.eps,
    }
    for key, value in given.items():
        if value is None:  # null: the default (Stride's, else torch's); never `value or ...`
            continue
        if not _takes(info, key):
            raise _not_taken(spec, key, value)
        kwargs[key] = value
    if spec.name == "sgd" and kwargs.get("momentum", 0) > 0:
        raise ConfigError(
            f"optimizer.momentum: {spec.momentum!r} is not allowed for sgd; use "
            "optimizer.name=momentum (or nesterov) for SGD with momentum, or 0"
        )
    if kwargs.get("nesterov") and kwargs.get("momentum", 0) <= 0:
        raise ConfigError(
            f"optimizer.momentum: {spec.momentum!r} is not allowed; {spec.name} needs "
            "momentum > 0 (in (0, 1)); use optimizer.name=sgd for plain SGD"
        )
    return kwargs


def check_optimizer(spec: OptimizerSpec) -> None:
    """Refuse what torch would refuse, before Ray starts: build it over one tensor.

    Builds no model; `pipeline.spec.validate` runs it after the range checks, so this
    only catches what those and `optimizer_kwargs` do not name more precisely.
    """
    info = OPTIMIZERS.get(spec.name)
    kwargs = optimizer_kwargs(spec)
    try:
        info.cls([torch.zeros(1, requires_grad=True)], **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"optimizer: torch refuses {spec.name} with {kwargs}: {exc}") from None


def build_optimizer(
    params: Iterable[torch.nn.Parameter], spec: OptimizerSpec
) -> torch.optim.Optimizer:
    """The optimizer a spec names, over `params`."""
    return OPTIMIZERS.get(spec.name).cls(params, **optimizer_kwargs(spec))


def lr_factor(spec: ScheduleSpec, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The multiplier of the initial learning rate at optimizer step `step` (from 0)."""
    epoch = step / steps_per_epoch  # fractional epochs elapsed
    warmup = spec.warmup_epochs
    factor = min(1.0, (epoch + 1 / steps_per_epoch) / warmup) if warmup > 0 else 1.0
    if spec.name == "step":
        factor *= spec.gamma ** (int(epoch) // spec.step_size)
    elif spec.name == "cosine":
        span = max(epochs - warmup, 1e-9)
        progress = min(max(epoch - warmup, 0.0) / span, 1.0)
        floor = spec.min_lr_factor
        factor *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def build_schedule(
    optimizer: torch.optim.Optimizer, spec: ScheduleSpec, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: warm-up, then none, step decay or cosine decay."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(spec, step, steps_per_epoch, epochs)
    )
