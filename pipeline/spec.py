"""Check a run config fully before anything trains, and print the model's layer table.

`validate` checks what parsing cannot: ranges that depend on other keys, the
names that live in registries (data set, loss, optimizer), what torch would
refuse of the optimizer, and the model, which it builds on the meta device
(`pipeline.model`): every layer's output shape and parameter count come from
the model that trains, and a layer that cannot work is a ConfigError naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.data import DATASETS, describe
from pipeline.losses import LOSSES
from pipeline.model import LayerSummary, summarize
from pipeline.optim import OPTIMIZERS, check_optimizer
from pipeline.schema import ConfigError, RunConfig
from pipeline.tables import format_table

if TYPE_CHECKING:
    from collections.abc import Mapping


def validate(cfg: RunConfig) -> list[LayerSummary]:
    """Check every name and number of a config; returns the model's layer table."""
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
    _check_source(cfg)
    info = describe(cfg.data)
    return summarize(cfg.model, input_shape=info.input_shape, num_classes=info.num_classes)


def layer_table(
    cfg: RunConfig, data: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], ...]:
    """config.json's `layers`: name, kind and parameter count of every layer in depth order.

    Shapes come from `data` (config.json's data record) when it has them, else from the
    data set's description; the model is built on the meta device, as for the checks.
    """
    if data and "input_shape" in data and "num_classes" in data:
        c, h, w = (int(n) for n in data["input_shape"])
        shape, classes = (c, h, w), int(data["num_classes"])
    else:
        info = describe(cfg.data)
        shape, classes = info.input_shape, info.num_classes
    rows = summarize(cfg.model, input_shape=shape, num_classes=classes)
    return tuple({"name": r.name, "kind": r.kind, "params": r.params} for r in rows)


def format_plan(layers: list[LayerSummary], input_shape: tuple[int, ...]) -> str:
    """A table of layers, output shapes and parameter counts, and the total."""
    rows = [("input", "", _shape(input_shape), "0", "")]
    rows += [(x.name, x.kind, _shape(x.shape), f"{x.params:,}", x.detail) for x in layers]
    header = ("layer", "kind", "output", "params", "")
    table = format_table(header, rows, ("left", "left", "right", "right", "left"))
    return f"{table}\ntotal parameters: {sum(x.params for x in layers):,}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


STREAMED_SOURCES = ("folder", "parquet")


def _check_source(cfg: RunConfig) -> None:
    """Streaming and URIs are for the sources Ray Data reads (folder, parquet)."""
    data = cfg.data
    if data.name in STREAMED_SOURCES:
        return
    if data.streaming is True:
        raise ConfigError(
            f"data.streaming: true needs data.name folder or parquet, not {data.name!r}; "
            "pack the data set first (stride data pack) and train from the packed shards"
        )
    if data.root is not None and "://" in data.root:
        raise ConfigError(
            f"data.root: {data.name} reads a local folder; a URI is for data.name folder or parquet"
        )


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
        (
            0 <= cfg.data.max_bad_fraction < 1,
            "data.max_bad_fraction",
            cfg.data.max_bad_fraction,
            "in [0, 1)",
        ),
        (
            cfg.data.memory_budget_mb > 0,
            "data.memory_budget_mb",
            cfg.data.memory_budget_mb,
            "> 0",
        ),
        (
            cfg.data.shuffle_buffer_mb >= 0,
            "data.shuffle_buffer_mb",
            cfg.data.shuffle_buffer_mb,
            ">= 0 (0: no local shuffle)",
        ),
        (
            cfg.data.prefetch_batches >= 0,
            "data.prefetch_batches",
            cfg.data.prefetch_batches,
            ">= 0",
        ),
        (cfg.data.task_cpus > 0, "data.task_cpus", cfg.data.task_cpus, "> 0"),
        (cfg.data.object_store_mb > 0, "data.object_store_mb", cfg.data.object_store_mb, "> 0"),
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
