"""Per-layer series of a group of runs: which layers are weight layers, and the dead
units of each activation layer over epochs.

A layer's kind comes from config.json's `layers` table (`conv`, `linear`,
`batch_norm`, `batch_norm1d`, `activation`, ...). Runs written before the table
existed are read by the last part of the layer's name, as pipeline/model.py names
them: `conv`, `fc`/`fc0` (linear), `bn`/`bn0` (batch norm), `act`/`act0`
(activation).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from runstore import EpochRecord, Run

WEIGHT_KINDS = frozenset({"conv", "linear"})  # the layers on the depth axis
_NAME_KINDS = {"conv": "conv", "fc": "linear", "bn": "batch_norm", "act": "activation"}


def layer_kind(run: Run, layer: str) -> str:
    """The layer's kind from the run's layer table, else from its name ('' if unknown)."""
    if run.record is not None:
        for entry in run.record.layers:
            if entry.get("name") == layer:
                return str(entry.get("kind", ""))
    last = re.sub(r"\d+$", "", layer.rsplit(".", 1)[-1])
    return _NAME_KINDS.get(last, "")


@dataclass(frozen=True)
class LayerFlow:
    """One layer's value per epoch: mean and sample std across the group's runs."""

    layer: str
    mean: tuple[float, ...]
    std: tuple[float, ...]  # NaN where fewer than two runs have the epoch
    kind: str = ""  # conv, linear, batch_norm, activation, ... ('' when unknown)
    depth: int = 0  # 1-based depth among weight layers (conv, linear); 0 for others

    @property
    def overall(self) -> float:
        """The mean over epochs of the per-epoch means (NaN epochs left out)."""
        return _mean([v for v in self.mean if not math.isnan(v)])


def layer_series(
    runs: Sequence[Run], values: Callable[[EpochRecord], Sequence[tuple[str, float]]]
) -> tuple[int, tuple[LayerFlow, ...]]:
    """(epochs, per-layer series) of one group: layers in the order first met, at each
    epoch the mean and std over the runs that reached it and report the layer."""
    order: list[str] = []
    for run in runs:
        for epoch in run.epochs:
            order.extend(layer for layer, _ in values(epoch) if layer not in order)
    n_epochs = max(len(r.epochs) for r in runs)
    by_layer: dict[str, list[list[float]]] = {
        layer: [[] for _ in range(n_epochs)] for layer in order
    }
    kinds: dict[str, str] = {}
    for run in runs:
        for i, epoch in enumerate(run.epochs):
            for layer, value in values(epoch):
                by_layer[layer][i].append(value)
                if not kinds.get(layer):
                    kinds[layer] = layer_kind(run, layer)
    depth = 0
    out = []
    for layer in order:
        kind = kinds.get(layer, "")
        if kind in WEIGHT_KINDS:
            depth += 1
        out.append(
            LayerFlow(
                layer,
                tuple(_mean(v) for v in by_layer[layer]),
                tuple(
                    float(np.std(v, ddof=1)) if len(v) > 1 else math.nan for v in by_layer[layer]
                ),
                kind,
                depth if kind in WEIGHT_KINDS else 0,
            )
        )
    return n_epochs, tuple(out)


def weight_layers(layers: Sequence[LayerFlow]) -> tuple[LayerFlow, ...]:
    """The conv and linear layers, input side first (what the depth axis shows)."""
    return tuple(layer for layer in layers if layer.kind in WEIGHT_KINDS)


@dataclass(frozen=True)
class GroupDeadUnits:
    """Per activation layer, the fraction of dead units over epochs, for one group."""

    name: str
    runs: int
    epochs: tuple[int, ...]
    layers: tuple[LayerFlow, ...]  # activation layers, input side first
    mean_by_epoch: tuple[float, ...]  # the mean over layers of each layer's mean


def dead_units(runs_by_group: Mapping[str, tuple[Run, ...]]) -> tuple[GroupDeadUnits, ...]:
    """Per group: every activation layer's dead-unit fraction per epoch (metrics.jsonl's
    `dead_units`; runs without it add nothing), and the mean over layers per epoch."""
    out = []
    for name, runs in runs_by_group.items():
        n_epochs, layers = layer_series(runs, lambda e: e.dead_units)
        per_epoch = tuple(
            _mean([layer.mean[i] for layer in layers if not math.isnan(layer.mean[i])])
            for i in range(n_epochs)
        )
        out.append(
            GroupDeadUnits(
                name, len(runs), tuple(range(1, n_epochs + 1)), layers, per_epoch if layers else ()
            )
        )
    return tuple(out)


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan
