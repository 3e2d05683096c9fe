"""Build a CNN from its spec: `build_model(spec, input_shape=..., num_classes=...)`.

The model is `features` (one nn.Sequential per block: conv, bn, act, drop, or a
pool) followed by `head` (global pool or flatten, dropout, dense layers). Module
names follow the plan (`features.0.conv`, `head.fc`), which is also how the run
store names layers in its gradient norms.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from pipeline.config import ActivationSpec, ModelSpec
from pipeline.layers import Conv2d, GlobalPool, build_activation, build_pool
from pipeline.spec import LayerPlan, plan_model


class CNN(nn.Module):
    """features -> head; forward returns logits (N, num_classes)."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, C, H, W) -> (N, K)


def _module_for(layer: LayerPlan) -> nn.Module:
    args = dict(layer.args)
    if layer.kind == "conv":
        block = args["block"]
        return Conv2d(int(args["in"]), block.channels, block.kernel, block.stride, block.padding)
    if layer.kind == "batch_norm":
        return nn.BatchNorm2d(int(args["in"]))
    if layer.kind == "batch_norm1d":
        return nn.BatchNorm1d(int(args["in"]))
    if layer.kind == "activation":
        spec = args["spec"]
        assert isinstance(spec, ActivationSpec)
        return build_activation(spec)
    if layer.kind == "dropout2d":
        return nn.Dropout2d(float(args["p"]))
    if layer.kind == "dropout":
        return nn.Dropout(float(args["p"]))
    if layer.kind == "pool":
        return build_pool(str(args["kind"]), int(args["size"]), int(args["stride"]))
    if layer.kind == "global_pool":
        return GlobalPool(str(args["kind"]))
    if layer.kind == "flatten":
        return nn.Flatten()
    if layer.kind == "linear":
        return nn.Linear(int(args["in"]), int(args["out"]))
    raise AssertionError(f"no module for layer kind {layer.kind}")


def build_from_plan(plan: list[LayerPlan]) -> CNN:
    """Instantiate the modules of a plan, named as the plan names them."""
    blocks: OrderedDict[str, OrderedDict[str, nn.Module]] = OrderedDict()
    head: OrderedDict[str, nn.Module] = OrderedDict()
    for layer in plan:
        parts = layer.name.split(".")
        if parts[0] == "features":
            blocks.setdefault(parts[1], OrderedDict())[parts[2]] = _module_for(layer)
        else:
            head[parts[1]] = _module_for(layer)
    features = nn.Sequential(OrderedDict((k, nn.Sequential(v)) for k, v in blocks.items()))
    return CNN(features, nn.Sequential(head))


def build_model(spec: ModelSpec, *, input_shape: tuple[int, int, int], num_classes: int) -> CNN:
    """Build the CNN a spec describes for inputs (C, H, W) and `num_classes` outputs."""
    return build_from_plan(plan_model(spec, input_shape, num_classes))


def parameterised_layers(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """(name, parameters) of every layer with its own parameters, in depth order.

    Works on a DDP-wrapped model too (its `module.` prefix is dropped).
    """
    layers = []
    for name, module in model.named_modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if params:
            layers.append((name.removeprefix("module."), params))
    return layers
