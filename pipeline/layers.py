"""Layers the model builder composes: activations (each its textbook formula),
Maxout, convolution with every padding mode, pooling, and the padding arithmetic.

Activations are module classes registered by name; each builds itself from the
ActivationSpec (`from_spec`), so that a new activation needs one class and one
entry here and is then covered by the parametrised forward, gradient and export
tests, and named in the layer table.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.registry import Registry
from pipeline.schema import ActivationSpec, ConfigError


def padding_amounts(padding: str | int, kernel: int) -> tuple[int, int]:
    """(before, after) zero padding on each spatial side for a padding mode."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        # k - 1 in total keeps the size at stride 1 (odd and even kernels) and gives
        # ceil(n / s) at stride s; an even kernel puts the extra pixel after.
        return (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2
    if padding == "full":
        return kernel - 1, kernel - 1
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding, padding
    raise ConfigError(
        f"padding {padding!r} is not allowed; allowed: valid, same, full, or an integer >= 0"
    )


def conv_output_size(n: int, kernel: int, stride: int, padding: str | int) -> int:
    """o = floor((n + p_before + p_after - kernel) / stride) + 1.

    The builder takes real shapes from a forward pass; this is only for refusing a
    convolution before building it, with the size it would give in the message.
    """
    before, after = padding_amounts(padding, kernel)
    return (n + before + after - kernel) // stride + 1


# A unit passes back "no gradient" where the activation's slope is below this fraction of
# its peak slope (docs/config.md, dead units): sigmoid |x| > 5.99, tanh |x| > 2.99.
DEAD_SLOPE = 0.01


class Activation(nn.Module):
    """An activation module, built from its ActivationSpec (most take nothing from it).

    Each declares the initialisers' `gain` (the factor a weight's standard deviation gets
    for this activation) and `flat(x)`, where it passes back (almost) no gradient: what
    makes a unit dead. Both are checked against their formulas in tests/pipeline.
    """

    @classmethod
    def from_spec(cls, spec: ActivationSpec) -> Activation:
        return cls()

    def gain(self) -> float:
        """Factor of the initial weights' standard deviation for a layer feeding this one."""
        raise NotImplementedError(f"{type(self).__name__} declares no initialisation gain")

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """Bool mask, shaped like the input x: where the slope is below DEAD_SLOPE of its peak."""
        raise NotImplementedError(f"{type(self).__name__} declares no flat region")


def gaussian_second_moment(f: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """E[f(z)^2] for z ~ N(0, 1), by the trapezoid rule on [-12, 12] (error < 1e-9 here)."""
    z = torch.linspace(-12.0, 12.0, 48_001, dtype=torch.float64)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return float(torch.trapezoid(f(z) ** 2 * density, z))


ACTIVATIONS: Registry[type[Activation]] = Registry("activation")


class Sigmoid(Activation):
    """1 / (1 + exp(-x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)

    def gain(self) -> float:
        return 1.0  # torch's calculate_gain and Glorot's normalised init (see docs/config.md)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        return s * (1 - s) < DEAD_SLOPE * 0.25  # peak slope 1/4 at x = 0


class Tanh(Activation):
    """(exp(x) - exp(-x)) / (exp(x) + exp(-x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    def gain(self) -> float:
        return 5.0 / 3.0  # torch's calculate_gain("tanh")

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - torch.tanh(x) ** 2 < DEAD_SLOPE  # peak slope 1 at x = 0


class ReLU(Activation):
    """max(0, x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def gain(self) -> float:
        return math.sqrt(2.0)  # He et al. 2015: 1 / sqrt(E[relu(z)^2]), z ~ N(0, 1)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return x <= 0  # output 0 and slope 0 (torch's slope at exactly 0 is 0 too)


class LeakyReLU(Activation):
    """max(a * x, x) with 0 <= a < 1 (a = 0.1 by default)."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    @classmethod
    def from_spec(cls, spec: ActivationSpec) -> LeakyReLU:
        return cls(spec.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def gain(self) -> float:
        return math.sqrt(2.0 / (1 + self.negative_slope**2))  # He et al. 2015, slope a

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        # the negative side keeps slope a: flat only when a is below DEAD_SLOPE (a = 0 is ReLU)
        if self.negative_slope < DEAD_SLOPE:
            return x <= 0
        return torch.zeros_like(x, dtype=torch.bool)

    def extra_repr(self) -> str:
        return f"a={self.negative_slope}"


class ELU(Activation):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    @classmethod
    def from_spec(cls, spec: ActivationSpec) -> ELU:
        return cls(spec.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x, self.alpha)

    def gain(self) -> float:
        # He's argument, 1 / sqrt(E[elu(z)^2]) at unit pre-activation variance (1.26 for alpha 1)
        return 1.0 / math.sqrt(gaussian_second_moment(lambda z: F.elu(z, self.alpha)))

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        # slope alpha * e^x for x <= 0, 1 above: flat where alpha * e^x < DEAD_SLOPE * peak
        peak = max(1.0, self.alpha)
        return (x <= 0) & (self.alpha * torch.exp(x) < DEAD_SLOPE * peak)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Maxout(Activation):
    """Max over k affine pieces: output i is max_j z[i*k + j] of the preceding layer.

    The preceding convolution or dense layer computes the k pieces w_j.x + b_j of
    every output side by side (channel groups of k), so a width of W becomes W / k.
    Works on (N, C, H, W) and (N, F) tensors.
    """

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    @classmethod
    def from_spec(cls, spec: ActivationSpec) -> Maxout:
        return cls(spec.pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, width = x.shape[0], x.shape[1]
        # (N, W, *S) -> (N, W/k, k, *S) -> max over the k pieces -> (N, W/k, *S)
        grouped = x.reshape(n, width // self.pieces, self.pieces, *x.shape[2:])
        return grouped.amax(dim=2)

    def gain(self) -> float:
        # He's argument: 1 / sqrt(E[max of k iid N(0, 1)^2]); exactly 1 for k = 2
        k = self.pieces
        cdf = lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # noqa: E731
        # max of k has density k phi(z) Phi(z)^(k-1): E[m^2] = E_z[z^2 k Phi(z)^(k-1)]
        return 1.0 / math.sqrt(gaussian_second_moment(lambda z: z * (k * cdf(z) ** (k - 1)).sqrt()))

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        # a piece gets the gradient only where it is the max of its group; the others get 0
        n, width = x.shape[0], x.shape[1]
        grouped = x.reshape(n, width // self.pieces, self.pieces, *x.shape[2:])
        return (grouped < grouped.amax(dim=2, keepdim=True)).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


ACTIVATIONS.add("sigmoid", Sigmoid, "logistic 1/(1+e^-x); saturates, gradients vanish in deep nets")
ACTIVATIONS.add("tanh", Tanh, "hyperbolic tangent; zero-centred, saturates")
ACTIVATIONS.add("relu", ReLU, "max(0, x)")
ACTIVATIONS.add("leaky_relu", LeakyReLU, "max(a*x, x), a = negative_slope (0.1)")
ACTIVATIONS.add("elu", ELU, "x if x > 0 else alpha*(e^x - 1), alpha (1.0)")
ACTIVATIONS.add("maxout", Maxout, "max over k affine pieces (pieces, 2); divides the width by k")


def check_activation(where: str, spec: ActivationSpec) -> None:
    """The activation's name and its parameters, whether or not a layer uses it."""
    if spec.name not in ACTIVATIONS:
        raise ConfigError(
            f"{where}: unknown activation {spec.name!r}; valid: {', '.join(ACTIVATIONS.names())}"
        )
    if spec.name == "maxout" and spec.pieces < 2:
        raise ConfigError(f"{where}: maxout pieces must be >= 2, got {spec.pieces}")
    if spec.name == "leaky_relu" and not 0 <= spec.negative_slope < 1:
        raise ConfigError(
            f"{where}: leaky_relu negative_slope must be in [0, 1), got {spec.negative_slope}"
        )
    if spec.name == "elu" and spec.alpha <= 0:
        raise ConfigError(f"{where}: elu alpha must be > 0, got {spec.alpha}")


def build_activation(spec: ActivationSpec) -> Activation:
    """The activation module a spec names."""
    return ACTIVATIONS.get(spec.name).from_spec(spec)


def activation_name(module: nn.Module) -> str | None:
    """The registered name of an activation module (the layer table shows it), else None."""
    return next((e.name for e in ACTIVATIONS if type(module) is e.value), None)


class Conv2d(nn.Conv2d):
    """A convolution with padding valid | same | full | int; `same` pads k-1 in all,
    the odd pixel after, so even kernels keep the size at stride 1 too."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: str | int
    ) -> None:
        before, after = padding_amounts(padding, kernel)
        super().__init__(
            in_channels, out_channels, kernel, stride, padding=before if before == after else 0
        )
        self.padding_rule = padding  # as configured, for the layer table
        # F.pad order: left, right, top, bottom; only for the asymmetric case
        self.extra_pad = None if before == after else (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return super().forward(x)


class GlobalPool(nn.Module):
    """(N, C, H, W) -> (N, C) by max or mean over H and W."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return x.amax(dim=(2, 3))
        return x.mean(dim=(2, 3))

    def extra_repr(self) -> str:
        return self.kind


def build_pool(kind: str, size: int, stride: int) -> nn.Module:
    """Max or mean pooling over size x size windows."""
    if kind == "max":
        return nn.MaxPool2d(size, stride)
    return nn.AvgPool2d(size, stride)
