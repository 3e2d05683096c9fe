"""Losses, registered by name. Each takes logits (N, K) and integer targets (N,)
and returns the mean loss over the batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


def _one_hot(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(targets, logits.shape[1]).to(logits.dtype)


@LOSSES.register("cross_entropy", "softmax then negative log-likelihood (the default)")
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)


@LOSSES.register(
    "binary_cross_entropy", "one-vs-rest: sigmoid per class against the one-hot target"
)
def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Mean over classes and examples, times K so that it is a sum over classes per example.
    per_class = F.binary_cross_entropy_with_logits(logits, _one_hot(targets, logits))
    return per_class * logits.shape[1]


@LOSSES.register("mse", "mean squared error of softmax probabilities against one-hot targets")
def mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=1)
    return ((probs - _one_hot(targets, logits)) ** 2).sum(dim=1).mean()


@LOSSES.register("mae", "mean absolute error of softmax probabilities against one-hot targets")
def mae(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=1)
    return (probs - _one_hot(targets, logits)).abs().sum(dim=1).mean()
