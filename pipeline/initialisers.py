"""Weight initialisers (`model.init`): one registry, each entry with its formula.

An initialiser sets the weights of every convolution and dense layer; batch norm keeps
its own (scale 1, shift 0). Every scheme but `default` sets biases to 0 and scales the
weights by the gain of the activation that follows the layer (`Activation.gain`:
sqrt(2) for ReLU, sqrt(2 / (1 + a^2)) for Leaky ReLU, 5/3 for tanh, 1 for sigmoid,
Maxout and a layer followed by none, the output layer). Fans of a convolution count
its kernel: fan_in = C_in k^2, fan_out = C_out k^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.layers import Activation, Conv2d
from pipeline.registry import Registry
from pipeline.schema import ConfigError


@dataclass(frozen=True)
class Initialiser:
    """How one scheme draws a weight tensor: `draw(weight, gain)`; None keeps the
    framework's own `reset_parameters` (weights and biases)."""

    formula: str
    draw: Callable[[torch.Tensor, float], None] | None


INITIALISERS: Registry[Initialiser] = Registry("initialiser")

WEIGHT_LAYERS = (Conv2d, nn.Linear)  # the layers an initialiser sets


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a dense (out, in) or convolution (out, in, kh, kw) weight."""
    receptive = math.prod(weight.shape[2:])  # 1 for a dense layer
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _normal(std: Callable[[int, int], float]) -> Callable[[torch.Tensor, float], None]:
    def draw(weight: torch.Tensor, gain: float) -> None:
        with torch.no_grad():
            weight.normal_(0.0, gain * std(*fans(weight)))

    return draw


def _uniform(std: Callable[[int, int], float]) -> Callable[[torch.Tensor, float], None]:
    def draw(weight: torch.Tensor, gain: float) -> None:
        bound = math.sqrt(3.0) * gain * std(*fans(weight))  # U(-b, b) has std b / sqrt(3)
        with torch.no_grad():
            weight.uniform_(-bound, bound)

    return draw


def _he(fan_in: int, fan_out: int) -> float:
    return 1.0 / math.sqrt(fan_in)


def _xavier(fan_in: int, fan_out: int) -> float:
    return math.sqrt(2.0 / (fan_in + fan_out))


INITIALISERS.add(
    "default",
    Initialiser("W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), b likewise", None),
    "PyTorch's own reset_parameters (Kaiming uniform with a = sqrt(5)); ignores the activation",
)
INITIALISERS.add(
    "he_normal",
    Initialiser("W ~ N(0, (gain / sqrt(fan_in))^2), b = 0", _normal(_he)),
    "He/Kaiming (2015), fan_in: keeps the forward variance in ReLU-like nets",
)
INITIALISERS.add(
    "he_uniform",
    Initialiser("W ~ U(-gain sqrt(3 / fan_in), gain sqrt(3 / fan_in)), b = 0", _uniform(_he)),
    "He/Kaiming (2015) with a uniform draw of the same variance",
)
INITIALISERS.add(
    "xavier_normal",
    Initialiser("W ~ N(0, gain^2 2 / (fan_in + fan_out)), b = 0", _normal(_xavier)),
    "Xavier/Glorot (2010): the average of forward and backward fans",
)
INITIALISERS.add(
    "xavier_uniform",
    Initialiser(
        "W ~ U(-gain sqrt(6 / (fan_in + fan_out)), gain sqrt(6 / (fan_in + fan_out))), b = 0",
        _uniform(_xavier),
    ),
    "Xavier/Glorot (2010) normalised init, the paper's uniform draw",
)


def check_init(name: str) -> Initialiser:
    """The initialiser `model.init` names, or ConfigError listing the valid ones."""
    if name not in INITIALISERS:
        raise ConfigError(
            f"model.init: unknown initialiser {name!r}; valid: {', '.join(INITIALISERS.names())}"
        )
    return INITIALISERS.get(name)


def following_gains(model: nn.Module) -> dict[nn.Module, float]:
    """Each weight layer's gain: that of the first activation after it in depth order
    before the next weight layer (batch norm and dropout in between do not count), else 1
    (the output layer, or a layer followed directly by another)."""
    gains: dict[nn.Module, float] = {}
    pending: nn.Module | None = None
    for module in model.modules():
        if isinstance(module, WEIGHT_LAYERS):
            pending = module
            gains[module] = 1.0
        elif isinstance(module, Activation) and pending is not None:
            gains[pending] = module.gain()
            pending = None
    return gains
