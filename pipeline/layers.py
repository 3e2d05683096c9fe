"""Layers the model builder composes: activations (each its textbook formula),
Maxout, convolution with every padding mode, pooling.

Activations are registered by name; a constructor takes the ActivationSpec and
the width it acts on, so that a new activation needs one entry here and is then
covered by the parametrised forward, gradient and export tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ActivationSpec
from pipeline.registry import Registry
from pipeline.spec import padding_amounts

ActivationFactory = Callable[[ActivationSpec], nn.Module]
ACTIVATIONS: Registry[ActivationFactory] = Registry("activation")


class Sigmoid(nn.Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


class Tanh(nn.Module):
    """(exp(x) - exp(-x)) / (exp(x) + exp(-x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


class ReLU(nn.Module):
    """max(0, x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class LeakyReLU(nn.Module):
    """max(a * x, x) with 0 <= a < 1 (a = 0.1 by default)."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"a={self.negative_slope}"


class ELU(nn.Module):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Maxout(nn.Module):
    """Max over k affine pieces: output i is max_j z[i*k + j] of the preceding layer.

    The preceding convolution or dense layer computes the k pieces w_j.x + b_j of
    every output side by side (channel groups of k), so a width of W becomes W / k.
    Works on (N, C, H, W) and (N, F) tensors.
    """

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, width = x.shape[0], x.shape[1]
        # (N, W, *S) -> (N, W/k, k, *S) -> max over the k pieces -> (N, W/k, *S)
        grouped = x.reshape(n, width // self.pieces, self.pieces, *x.shape[2:])
        return grouped.amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


ACTIVATIONS.add(
    "sigmoid", lambda s: Sigmoid(), "logistic 1/(1+e^-x); saturates, gradients vanish in deep nets"
)
ACTIVATIONS.add("tanh", lambda s: Tanh(), "hyperbolic tangent; zero-centred, saturates")
ACTIVATIONS.add("relu", lambda s: ReLU(), "max(0, x)")
ACTIVATIONS.add(
    "leaky_relu", lambda s: LeakyReLU(s.negative_slope), "max(a*x, x), a = negative_slope (0.1)"
)
ACTIVATIONS.add("elu", lambda s: ELU(s.alpha), "x if x > 0 else alpha*(e^x - 1), alpha (1.0)")
ACTIVATIONS.add(
    "maxout",
    lambda s: Maxout(s.pieces),
    "max over k affine pieces (pieces, 2); divides the width by k",
)


def build_activation(spec: ActivationSpec) -> nn.Module:
    """The activation module a spec names."""
    return ACTIVATIONS.get(spec.name)(spec)


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
    if kind == "max":
        return nn.MaxPool2d(size, stride)
    return nn.AvgPool2d(size, stride)
