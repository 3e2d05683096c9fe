"""Check a run config fully before anything trains, and plan the model's shapes.

`plan_model` walks the model spec with plain arithmetic (no torch): every layer's
output shape and parameter count, using o = floor((n + p_total - k) / s) + 1.
The builder (`pipeline.model`) consumes the same plan, so the summary printed
before training is the model that trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import (
    ActivationSpec,
    ConfigError,
    ConvSpec,
    DropoutSpec,
    ModelSpec,
    PoolSpec,
    RunConfig,
)


@dataclass(frozen=True)
class LayerPlan:
    """One layer of the planned model: what it is, its output shape, its parameters."""

    name: str  # module path in the built model, e.g. features.0.conv
    kind: str  # conv, batch_norm, activation, dropout, pool, global_pool, flatten, linear
    shape: tuple[int, ...]  # output shape without the batch axis: (C, H, W) or (F,)
    params: int
    detail: str = ""
    args: tuple[tuple[str, Any], ...] = ()  # what the builder needs


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
    """o = floor((n + p_before + p_after - kernel) / stride) + 1."""
    before, after = padding_amounts(padding, kernel)
    return (n + before + after - kernel) // stride + 1


def check_activation(name: str, act: ActivationSpec) -> None:
    """The activation's name and its parameters, whether or not a layer uses it."""
    from pipeline.layers import ACTIVATIONS

    if act.name not in ACTIVATIONS:
        raise ConfigError(
            f"{name}: unknown activation {act.name!r}; valid: {', '.join(ACTIVATIONS.names())}"
        )
    if act.name == "maxout" and act.pieces < 2:
        raise ConfigError(f"{name}: maxout pieces must be >= 2, got {act.pieces}")
    if act.name == "leaky_relu" and not 0 <= act.negative_slope < 1:
        raise ConfigError(
            f"{name}: leaky_relu negative_slope must be in [0, 1), got {act.negative_slope}"
        )
    if act.name == "elu" and act.alpha <= 0:
        raise ConfigError(f"{name}: elu alpha must be > 0, got {act.alpha}")


def _activation_plan(
    name: str, act: ActivationSpec, width: int, shape: tuple[int, ...]
) -> LayerPlan:
    check_activation(name, act)
    if act.name == "maxout":
        if width % act.pieces:
            raise ConfigError(
                f"{name}: maxout with {act.pieces} pieces needs a width divisible by "
                f"{act.pieces}, got {width}"
            )
        shape = (width // act.pieces, *shape[1:])
    return LayerPlan(name, "activation", shape, 0, act.name, (("spec", act),))


def _check_dropout(name: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"{name}: dropout must be in [0, 1), got {p}")


def plan_model(
    spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int
) -> list[LayerPlan]:
    """Every layer with its output shape; ConfigError names the layer that cannot work."""
    if num_classes < 2:
        raise ConfigError(f"model: needs at least 2 classes, got {num_classes}")
    check_activation("model.activation", spec.activation)
    plan: list[LayerPlan] = []
    c, h, w = input_shape
    for i, block in enumerate(spec.blocks):
        where = f"model.blocks.{i}"
        prefix = f"features.{i}"
        if isinstance(block, ConvSpec):
            if block.channels < 1 or block.kernel < 1 or block.stride < 1:
                raise ConfigError(
                    f"{where}: channels, kernel and stride must be >= 1, got "
                    f"{block.channels}, {block.kernel}, {block.stride}"
                )
            padding_amounts(block.padding, block.kernel)
            oh = conv_output_size(h, block.kernel, block.stride, block.padding)
            ow = conv_output_size(w, block.kernel, block.stride, block.padding)
            if oh < 1 or ow < 1:
                raise ConfigError(
                    f"{where}: a {block.kernel}x{block.kernel} convolution with padding "
                    f"{block.padding!r} on a {h}x{w} input gives {oh}x{ow}; use padding "
                    f"same or full, or a smaller kernel"
                )
            params = c * block.channels * block.kernel**2 + block.channels
            detail = f"k={block.kernel} s={block.stride} p={block.padding}"
            plan.append(
                LayerPlan(
                    f"{prefix}.conv",
                    "conv",
                    (block.channels, oh, ow),
                    params,
                    detail,
                    (("in", c), ("block", block)),
                )
            )
            c, h, w = block.channels, oh, ow
            if block.batch_norm:
                plan.append(
                    LayerPlan(f"{prefix}.bn", "batch_norm", (c, h, w), 2 * c, "", (("in", c),))
                )
            act_where = f"{where}.activation" if block.activation else "model.activation"
            act = _activation_plan(act_where, block.activation or spec.activation, c, (c, h, w))
            plan.append(LayerPlan(f"{prefix}.act", act.kind, act.shape, 0, act.detail, act.args))
            c = act.shape[0]
            _check_dropout(f"{where}.dropout", block.dropout)
            if block.dropout > 0:
                plan.append(
                    LayerPlan(
                        f"{prefix}.drop",
                        "dropout2d",
                        (c, h, w),
                        0,
                        f"p={block.dropout}",
                        (("p", block.dropout),),
                    )
                )
        elif isinstance(block, PoolSpec):
            stride = block.size if block.stride is None else block.stride  # 0 is not None
            if block.size < 1 or stride < 1:
                raise ConfigError(
                    f"{where}: pool size and stride must be >= 1, got size {block.size}, "
                    f"stride {stride}"
                )
            oh, ow = (h - block.size) // stride + 1, (w - block.size) // stride + 1
            if block.size > h or block.size > w:
                raise ConfigError(
                    f"{where}: a {block.size}x{block.size} {block.kind} pool on a {h}x{w} "
                    f"input shrinks a side below 1; pool size must be <= {min(h, w)} here"
                )
            plan.append(
                LayerPlan(
                    f"{prefix}.pool",
                    "pool",
                    (c, oh, ow),
                    0,
                    f"{block.kind} {block.size} s={stride}",
                    (("kind", block.kind), ("size", block.size), ("stride", stride)),
                )
            )
            h, w = oh, ow
        elif isinstance(block, DropoutSpec):
            _check_dropout(f"{where}.p", block.p)
            plan.append(
                LayerPlan(
                    f"{prefix}.drop", "dropout2d", (c, h, w), 0, f"p={block.p}", (("p", block.p),)
                )
            )
    plan.extend(_plan_head(spec, (c, h, w), num_classes))
    return plan


def _plan_head(spec: ModelSpec, shape: tuple[int, int, int], num_classes: int) -> list[LayerPlan]:
    head = spec.head
    c, h, w = shape
    plan: list[LayerPlan] = []
    if head.global_pool != "none":
        plan.append(
            LayerPlan(
                "head.pool", "global_pool", (c,), 0, head.global_pool, (("kind", head.global_pool),)
            )
        )
        width = c
    else:
        width = c * h * w
        plan.append(LayerPlan("head.flatten", "flatten", (width,), 0))
    _check_dropout("model.head.dropout", head.dropout)
    for j, units in enumerate((*head.hidden, num_classes)):
        last = j == len(head.hidden)
        where = "model.head" if last else f"model.head.hidden[{j}]"
        if units < 1:
            raise ConfigError(f"{where}: width must be >= 1, got {units}")
        if head.dropout > 0:
            plan.append(
                LayerPlan(
                    f"head.drop{j}",
                    "dropout",
                    (width,),
                    0,
                    f"p={head.dropout}",
                    (("p", head.dropout),),
                )
            )
        name = "head.fc" if last else f"head.fc{j}"
        plan.append(
            LayerPlan(
                name, "linear", (units,), width * units + units, "", (("in", width), ("out", units))
            )
        )
        width = units
        if last:
            break
        if head.batch_norm:
            plan.append(
                LayerPlan(f"head.bn{j}", "batch_norm1d", (width,), 2 * width, "", (("in", width),))
            )
        act_where = "model.head.activation" if head.activation else "model.activation"
        act = _activation_plan(
            f"{act_where} (at {where})", head.activation or spec.activation, width, (width,)
        )
        plan.append(LayerPlan(f"head.act{j}", act.kind, act.shape, 0, act.detail, act.args))
        width = act.shape[0]
    return plan


def format_plan(plan: list[LayerPlan], input_shape: tuple[int, ...]) -> str:
    """A table of layers, output shapes and parameter counts."""
    rows = [("layer", "kind", "output", "params", "")]
    rows.append(("input", "", "x".join(map(str, input_shape)), "0", ""))
    for p in plan:
        rows.append((p.name, p.kind, "x".join(map(str, p.shape)), f"{p.params:,}", p.detail))
    total = sum(p.params for p in plan)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  "
        f"{r[3]:>{widths[3]}}  {r[4]}".rstrip()
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"total parameters: {total:,}")
    return "\n".join(lines)


def _check_ranges(cfg: RunConfig) -> None:
    checks = [
        (cfg.training.epochs >= 1, "training.epochs", cfg.training.epochs, "an integer >= 1"),
        (cfg.training.batch_size >= 1, "training.batch_size", cfg.training.batch_size, ">= 1"),
        (
            cfg.training.eval_batch_size >= 1,
            "training.eval_batch_size",
            cfg.training.eval_batch_size,
            ">= 1",
        ),
        (
            cfg.training.grad_clip is None or cfg.training.grad_clip > 0,
            "training.grad_clip",
            cfg.training.grad_clip,
            "> 0 or null",
        ),
        (
            cfg.optimizer.lr is None or cfg.optimizer.lr > 0,
            "optimizer.lr",
            cfg.optimizer.lr,
            "> 0 or null for the default",
        ),
        (
            cfg.optimizer.weight_decay is None or cfg.optimizer.weight_decay >= 0,
            "optimizer.weight_decay",
            cfg.optimizer.weight_decay,
            ">= 0 or null for the default",
        ),
        (
            cfg.optimizer.momentum is None or 0 <= cfg.optimizer.momentum < 1,
            "optimizer.momentum",
            cfg.optimizer.momentum,
            "in [0, 1) or null for the default",
        ),
        (
            cfg.optimizer.betas is None or all(0 <= b < 1 for b in cfg.optimizer.betas),
            "optimizer.betas",
            cfg.optimizer.betas,
            "two numbers in [0, 1) or null for the default",
        ),
        (
            cfg.optimizer.eps is None or cfg.optimizer.eps > 0,
            "optimizer.eps",
            cfg.optimizer.eps,
            "> 0 or null for the default",
        ),
        (
            cfg.schedule.warmup_epochs >= 0,
            "schedule.warmup_epochs",
            cfg.schedule.warmup_epochs,
            ">= 0",
        ),
        (cfg.schedule.step_size >= 1, "schedule.step_size", cfg.schedule.step_size, ">= 1"),
        (0 < cfg.schedule.gamma <= 1, "schedule.gamma", cfg.schedule.gamma, "in (0, 1]"),
        (
            0 <= cfg.schedule.min_lr_factor <= 1,
            "schedule.min_lr_factor",
            cfg.schedule.min_lr_factor,
            "in [0, 1]",
        ),
        (
            cfg.early_stopping.patience >= 1,
            "early_stopping.patience",
            cfg.early_stopping.patience,
            ">= 1",
        ),
        (
            cfg.early_stopping.min_delta >= 0,
            "early_stopping.min_delta",
            cfg.early_stopping.min_delta,
            ">= 0",
        ),
        (cfg.scaling.workers >= 1, "scaling.workers", cfg.scaling.workers, ">= 1"),
        (
            cfg.scaling.cpus_per_worker > 0,
            "scaling.cpus_per_worker",
            cfg.scaling.cpus_per_worker,
            "> 0",
        ),
        (
            cfg.scaling.gpus_per_worker > 0,
            "scaling.gpus_per_worker",
            cfg.scaling.gpus_per_worker,
            "> 0 (fractions share a GPU)",
        ),
        (cfg.scaling.max_failures >= 0, "scaling.max_failures", cfg.scaling.max_failures, ">= 0"),
        (0 < cfg.data.val_fraction < 1, "data.val_fraction", cfg.data.val_fraction, "in (0, 1)"),
        (0 < cfg.data.test_fraction < 1, "data.test_fraction", cfg.data.test_fraction, "in (0, 1)"),
        (
            cfg.data.val_fraction + cfg.data.test_fraction < 0.9,
            "data.val_fraction + test_fraction",
            round(cfg.data.val_fraction + cfg.data.test_fraction, 6),
            "< 0.9",
        ),
        (
            cfg.data.augment.crop_padding >= 0,
            "data.augment.crop_padding",
            cfg.data.augment.crop_padding,
            ">= 0",
        ),
        (
            0 <= cfg.data.augment.rotation <= 180,
            "data.augment.rotation",
            cfg.data.augment.rotation,
            "in [0, 180] degrees",
        ),
        (cfg.data.num_samples >= 10, "data.num_samples", cfg.data.num_samples, ">= 10"),
        # explicit zeros: data sets fill in a default for null (`channels or 3`), not for 0
        (
            cfg.data.channels is None or cfg.data.channels >= 1,
            "data.channels",
            cfg.data.channels,
            "1 or 3 (any >= 1 for synthetic data) or null",
        ),
        (
            cfg.data.num_classes is None or cfg.data.num_classes >= 2,
            "data.num_classes",
            cfg.data.num_classes,
            ">= 2 or null",
        ),
        (
            cfg.data.image_size is None or min(cfg.data.image_size) >= 1,
            "data.image_size",
            cfg.data.image_size,
            "[height, width], each >= 1, or null",
        ),
    ]
    for ok, key, value, allowed in checks:
        if not ok:
            raise ConfigError(f"{key}: {value!r} is not allowed; must be {allowed}")


def validate(cfg: RunConfig) -> list[LayerPlan]:
    """Check every name and number of a config; returns the model plan."""
    from pipeline.data import DATASETS, describe
    from pipeline.losses import LOSSES
    from pipeline.optim import OPTIMIZERS, check_optimizer

    _check_ranges(cfg)
    for registry, name, key in (
        (DATASETS, cfg.data.name, "data.name"),
        (LOSSES, cfg.loss.name, "loss.name"),
        (OPTIMIZERS, cfg.optimizer.name, "optimizer.name"),
    ):
        if name not in registry:
            raise ConfigError(
                f"{key}: unknown {registry.kind} {name!r}; valid: {', '.join(registry.names())}"
            )
    check_optimizer(cfg.optimizer)  # what torch would refuse in every Ray worker
    info = describe(cfg.data)
    return plan_model(cfg.model, info.input_shape, info.num_classes)
