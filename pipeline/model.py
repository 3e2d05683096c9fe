"""Build a CNN from its spec, and its layer table: `build_model`, `summarize`.

The model is `features` (one nn.Sequential per block: conv, bn, act, drop, or a
pool) followed by `head` (global pool or flatten, dropout, dense layers). Module
names (`features.0.conv`, `head.fc`) are also how the run store names layers in
its gradient norms.

The spec is described once, by the modules. They are built on the meta device
(no memory, no random numbers), a batch run through each as it is added, so every
check and every next layer sees the shape the model really produces; a spec that
cannot work is a ConfigError naming the layer. Then the model gets real tensors:
each module resets its own, except that a `model.init` other than `default` draws the
conv and dense weights (and zeroes their biases) with the gain of the activation that
follows each (`pipeline.initialisers`). `summarize` reads shapes and
parameter counts from that same model, so the table printed is the model that trains.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.initialisers import WEIGHT_LAYERS, check_init, following_gains
from pipeline.layers import (
    Conv2d,
    GlobalPool,
    activation_name,
    build_activation,
    build_pool,
    check_activation,
    conv_output_size,
)
from pipeline.schema import ActivationSpec, ConfigError, ConvSpec, DropoutSpec, ModelSpec, PoolSpec


class CNN(nn.Module):
    """features -> head; forward returns logits (N, num_classes)."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, C, H, W) -> (N, K)


@dataclass(frozen=True)
class LayerSummary:
    """One row of the layer table: a module of the built model and what it produces."""

    name: str  # module path in the model, e.g. features.0.conv
    kind: str  # conv, batch_norm, activation, dropout2d, pool, global_pool, flatten, linear, ...
    shape: tuple[int, ...]  # output shape without the batch axis: (C, H, W) or (F,)
    params: int
    detail: str = ""


def build_model(
    spec: ModelSpec,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    device: str | torch.device = "cpu",
) -> CNN:
    """The CNN a spec describes for inputs (C, H, W) and `num_classes` outputs.

    `device="meta"` gives the model without weights: what the checks and the layer
    table need. On any other device the weights are drawn in the order the modules
    were added, as if each had been built there directly (same seed, same weights), by
    the initialiser `spec.init` names.
    """
    with torch.device("meta"):
        model = _assemble(spec, input_shape, num_classes)
    if torch.device(device).type != "meta":
        _materialize(model, device, spec.init)
    return model


class _Stack:
    """Modules in order, each run on a meta batch as it is added."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x  # (N, C, H, W) or (N, F) on the meta device
        self.layers: OrderedDict[str, nn.Module] = OrderedDict()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def add(self, name: str, module: nn.Module) -> None:
        self.layers[name] = module
        self.x = module(self.x)


def _assemble(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> CNN:
    if num_classes < 2:
        raise ConfigError(f"model: needs at least 2 classes, got {num_classes}")
    check_activation("model.activation", spec.activation)
    check_init(spec.init)
    # Two images: batch norm refuses a batch of one in training mode, on meta too.
    x = torch.empty(2, *input_shape)  # (N, C, H, W)
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    for i, block in enumerate(spec.blocks):
        stack = _Stack(x)
        where = f"model.blocks.{i}"
        with _refused_by_torch(where):
            if isinstance(block, ConvSpec):
                _add_conv(stack, where, block, spec.activation)
            elif isinstance(block, PoolSpec):
                _add_pool(stack, where, block)
            elif isinstance(block, DropoutSpec):
                _check_dropout(f"{where}.p", block.p)
                stack.add("drop", nn.Dropout2d(block.p))
        blocks[str(i)] = nn.Sequential(stack.layers)
        x = stack.x
    head = _Stack(x)
    with _refused_by_torch("model.head"):
        _add_head(head, spec, num_classes)
    return CNN(nn.Sequential(blocks), nn.Sequential(head.layers))


@contextmanager
def _refused_by_torch(where: str) -> Iterator[None]:
    """What torch refuses that the checks here do not name (sizes past 64 bits, ...),
    as a ConfigError naming the layer, before anything trains."""
    try:
        yield
    except ConfigError:
        raise
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where}: torch cannot build this layer: {reason}") from None


def _add_conv(stack: _Stack, where: str, block: ConvSpec, default: ActivationSpec) -> None:
    if block.channels < 1 or block.kernel < 1 or block.stride < 1:
        raise ConfigError(
            f"{where}: channels, kernel and stride must be >= 1, got "
            f"{block.channels}, {block.kernel}, {block.stride}"
        )
    c, h, w = stack.shape
    oh, ow = (conv_output_size(n, block.kernel, block.stride, block.padding) for n in (h, w))
    if oh < 1 or ow < 1:
        raise ConfigError(
            f"{where}: a {block.kernel}x{block.kernel} convolution with padding "
            f"{block.padding!r} on a {h}x{w} input gives {oh}x{ow}; use padding "
            f"same or full, or a smaller kernel"
        )
    stack.add("conv", Conv2d(c, block.channels, block.kernel, block.stride, block.padding))
    if block.batch_norm:
        stack.add("bn", nn.BatchNorm2d(block.channels))
    act_where = f"{where}.activation" if block.activation else "model.activation"
    stack.add("act", _activation(act_where, block.activation or default, block.channels))
    _check_dropout(f"{where}.dropout", block.dropout)
    if block.dropout > 0:
        stack.add("drop", nn.Dropout2d(block.dropout))


def _add_pool(stack: _Stack, where: str, block: PoolSpec) -> None:
    stride = block.size if block.stride is None else block.stride  # 0 is not None
    if block.size < 1 or stride < 1:
        raise ConfigError(
            f"{where}: pool size and stride must be >= 1, got size {block.size}, stride {stride}"
        )
    _, h, w = stack.shape
    if block.size > h or block.size > w:
        raise ConfigError(
            f"{where}: a {block.size}x{block.size} {block.kind} pool on a {h}x{w} "
            f"input shrinks a side below 1; pool size must be <= {min(h, w)} here"
        )
    stack.add("pool", build_pool(block.kind, block.size, stride))


def _add_head(stack: _Stack, spec: ModelSpec, num_classes: int) -> None:
    head = spec.head
    if head.global_pool != "none":
        stack.add("pool", GlobalPool(head.global_pool))  # (N, C)
    else:
        stack.add("flatten", nn.Flatten())  # (N, C*H*W)
    _check_dropout("model.head.dropout", head.dropout)
    for j, units in enumerate((*head.hidden, num_classes)):
        last = j == len(head.hidden)
        where = "model.head" if last else f"model.head.hidden[{j}]"
        if units < 1:
            raise ConfigError(f"{where}: width must be >= 1, got {units}")
        if head.dropout > 0:
            stack.add(f"drop{j}", nn.Dropout(head.dropout))
        stack.add("fc" if last else f"fc{j}", nn.Linear(stack.shape[0], units))
        if last:
            break
        if head.batch_norm:
            stack.add(f"bn{j}", nn.BatchNorm1d(units))
        act_where = "model.head.activation" if head.activation else "model.activation"
        act = head.activation or spec.activation
        stack.add(f"act{j}", _activation(f"{act_where} (at {where})", act, units))


def _activation(where: str, spec: ActivationSpec, width: int) -> nn.Module:
    check_activation(where, spec)
    if spec.name == "maxout" and width % spec.pieces:
        raise ConfigError(
            f"{where}: maxout with {spec.pieces} pieces needs a width divisible by "
            f"{spec.pieces}, got {width}"
        )
    return build_activation(spec)


def _check_dropout(where: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"{where}: dropout must be in [0, 1), got {p}")


def _materialize(model: nn.Module, device: str | torch.device, init: str = "default") -> None:
    """Real tensors for a meta model, in the order the modules were added. With the
    `default` initialiser each module resets its own: the random draws of building every
    module on `device` directly. Any other draws each conv and dense weight with the gain
    of the activation after it and zeroes its bias; other modules (batch norm) reset.
    Every tensor is written: `to_empty` leaves uninitialised memory."""
    draw = check_init(init).draw
    gains = following_gains(model) if draw is not None else {}
    model.to_empty(device=device)
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if draw is not None and isinstance(module, WEIGHT_LAYERS):
            draw(module.weight, gains[module])
            if module.bias is not None:
                with torch.no_grad():
                    module.bias.zero_()
        elif reset is not None:
            reset()
        elif [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            raise TypeError(f"{type(module).__name__} has tensors but no reset_parameters")


def summarize(
    spec: ModelSpec, *, input_shape: tuple[int, int, int], num_classes: int
) -> list[LayerSummary]:
    """Every layer of the model `build_model` gives, with its output shape and parameter
    count, in order; ConfigError names the layer of a spec that cannot work."""
    model = build_model(spec, input_shape=input_shape, num_classes=num_classes, device="meta")
    shapes: dict[str, tuple[int, ...]] = {}
    containers = (CNN, nn.Sequential)  # features, its blocks and head hold the layers
    layers = [(name, m) for name, m in model.named_modules() if not isinstance(m, containers)]
    for name, module in layers:
        module.register_forward_hook(
            lambda _m, _in, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
    model(torch.empty(2, *input_shape, device="meta"))
    rows = []
    for name, module in layers:
        kind, detail = _kind_and_detail(module)
        params = sum(p.numel() for p in module.parameters())
        rows.append(LayerSummary(name, kind, shapes[name], params, detail))
    return rows


def _kind_and_detail(module: nn.Module) -> tuple[str, str]:
    """The layer table's kind and detail columns for a module."""
    match module:
        case Conv2d():
            kernel, stride = module.kernel_size[0], module.stride[0]
            return "conv", f"k={kernel} s={stride} p={module.padding_rule}"
        case nn.BatchNorm2d():
            return "batch_norm", ""
        case nn.BatchNorm1d():
            return "batch_norm1d", ""
        case nn.Dropout2d():
            return "dropout2d", f"p={module.p}"
        case nn.Dropout():
            return "dropout", f"p={module.p}"
        case nn.MaxPool2d() | nn.AvgPool2d():
            kind = "max" if isinstance(module, nn.MaxPool2d) else "mean"
            return "pool", f"{kind} {module.kernel_size} s={module.stride}"
        case GlobalPool():
            return "global_pool", module.kind
        case nn.Flatten():
            return "flatten", ""
        case nn.Linear():
            return "linear", ""
    name = activation_name(module)
    if name is None:
        raise TypeError(f"no layer-table entry for {type(module).__name__}")
    return "activation", name


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
