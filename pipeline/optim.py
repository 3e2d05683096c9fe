"""Optimizers as small frozen records, and learning-rate schedules.

`list_optimizers()` feeds `stride models` and the analysis service, so the names
are spelled the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.config import OptimizerSpec, ScheduleSpec
from pipeline.registry import Registry


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


def optimizer_kwargs(spec: OptimizerSpec) -> dict[str, Any]:
    """The keyword arguments the optimizer is built with: defaults, then the config."""
    info = OPTIMIZERS.get(spec.name)
    kwargs = dict(info.defaults)
    if spec.lr is not None:
        kwargs["lr"] = spec.lr
    if spec.weight_decay or "weight_decay" not in kwargs:
        kwargs["weight_decay"] = spec.weight_decay
    if spec.momentum is not None:
        if info.cls not in (torch.optim.SGD, torch.optim.RMSprop):
            raise ValueError(
                f"optimizer.momentum: {spec.name} takes no momentum; momentum applies to "
                "sgd, momentum, nesterov and rmsprop (use betas for the adam family)"
            )
        if spec.name == "sgd" and spec.momentum > 0:
            raise ValueError(
                "optimizer.momentum: use optimizer.name=momentum for SGD with momentum"
            )
        kwargs["momentum"] = spec.momentum
    if spec.betas is not None:
        if "betas" not in info.cls.__init__.__code__.co_varnames:
            raise ValueError(f"optimizer.betas: {spec.name} takes no betas")
        kwargs["betas"] = spec.betas
    if spec.eps is not None:
        kwargs["eps"] = spec.eps
    return kwargs


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
