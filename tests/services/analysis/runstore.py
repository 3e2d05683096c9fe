"""Write synthetic run stores in exactly the format of docs/formats.md, with known values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LAYERS = ("features.0.conv", "features.1.conv", "head.fc")


def epoch_line(
    epoch: int,
    val_accuracy: float,
    *,
    val_loss: float | None = None,
    elapsed: float | None = None,
    grad_norms: Sequence[float] = (0.01, 0.1, 1.0),
    **extra: Any,
) -> dict[str, Any]:
    """One metrics.jsonl record; losses and times derived from the accuracy unless given."""
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": round(1.0 - val_accuracy + 0.05, 6),
        "train_accuracy": min(1.0, val_accuracy + 0.01),
        "val_loss": round(1.0 - val_accuracy, 6) if val_loss is None else val_loss,
        "val_accuracy": val_accuracy,
        "lr": 0.01,
        "grad_norms": [
            {"layer": layer, "norm": norm} for layer, norm in zip(LAYERS, grad_norms, strict=True)
        ],
        "epoch_seconds": 1.0,
        "elapsed_seconds": float(epoch) if elapsed is None else elapsed,
        "images_per_second": 1000.0,
    }
    record.update(extra)
    return record


def write_run(
    root: Path,
    experiment: str,
    run_id: str,
    *,
    config: Mapping[str, Any],
    epochs: Sequence[Mapping[str, Any]] = (),
    summary: Mapping[str, Any] | None = None,
    grid: Mapping[str, Any] | None = None,
    layers: Sequence[Mapping[str, Any]] | None = None,
    effective: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Path:
    """A run folder: config.json, metrics.jsonl (one line per epoch) and summary.json if given."""
    folder = root / experiment / run_id
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "schema": 1,
        "experiment": experiment,
        "run_id": run_id,
        "created_at": "2026-11-27T17:30:00Z",
        "config": dict(config),
        "config_hash": "0123456789abcdef",
        "grid": dict(grid or {}),
        "code_version": "0.1.0",
        "versions": {"python": "3.11.7"},
        "effective": dict(
            effective or {"workers": 1, "batch_size": 64, "lr": 0.01, "device": "cpu"}
        ),
    }
    if layers is not None:
        meta["layers"] = [dict(layer) for layer in layers]
    if data is not None:
        meta["data"] = dict(data)
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def summary(
    test_accuracy: float | None,
    epochs_run: int,
    *,
    status: str = "completed",
    wall_seconds: float | None = None,
    reason: str | None = None,
    failure: str | None = None,
    schema: int | None = None,
) -> dict[str, Any]:
    """A summary.json record: without `schema` as the first format wrote it (a failed
    run's reason tells a divergence), with schema 2 and `failure` as Stride writes now."""
    record: dict[str, Any] = {} if schema is None else {"schema": schema, "failure": failure}
    return record | {
        "status": status,
        "reason": reason,
        "test_loss": None if test_accuracy is None else round(1.0 - test_accuracy, 6),
        "test_accuracy": test_accuracy,
        "best_epoch": epochs_run,
        "best_metric": "val_loss",
        "best_value": 0.1,
        "epochs_run": epochs_run,
        "stopped_early": False,
        "wall_seconds": float(epochs_run) + 0.5 if wall_seconds is None else wall_seconds,
        "device": "cpu",
        "finished_at": "2026-11-27T17:31:02Z",
    }


# The known store: val accuracy per epoch for each (optimizer, seed), target 0.95.
#   adam: reaches at epochs 2, 3, 1 -> mean 2, sample std 1
#   sgd:  never, 3, never (budget 3) -> mean 3, std 0, 1 of 3 reached
CURVES: dict[tuple[str, int], list[float]] = {
    ("adam", 1): [0.5, 0.96, 0.97],
    ("adam", 2): [0.6, 0.8, 0.95],
    ("adam", 3): [0.95, 0.96, 0.98],
    ("sgd", 1): [0.3, 0.5, 0.7],
    ("sgd", 2): [0.4, 0.9, 0.96],
    ("sgd", 3): [0.2, 0.6, 0.94],
}
TEST_ACCURACY = {
    ("adam", 1): 0.97,
    ("adam", 2): 0.95,
    ("adam", 3): 0.99,
    ("sgd", 1): 0.70,
    ("sgd", 2): 0.96,
    ("sgd", 3): 0.94,
}


def run_id(optimizer: str, seed: int) -> str:
    """A sweep-style run id."""
    return f"{optimizer}-s{seed}-ab{seed:02d}"


def run_config(optimizer: str, seed: int, activation: str = "relu") -> dict[str, Any]:
    """A nested config like the training pipeline writes (only the keys the tests use)."""
    return {
        "seed": seed,
        "epochs": 3,
        "optimizer": {"name": optimizer, "lr": 0.01},
        "model": {"activation": {"name": activation}},
    }


def write_known_store(root: Path, experiment: str = "opt") -> Path:
    """The six completed runs of CURVES under root/experiment."""
    for (optimizer, seed), curve in CURVES.items():
        write_run(
            root,
            experiment,
            run_id(optimizer, seed),
            config=run_config(optimizer, seed),
            grid={"optimizer.name": optimizer},
            epochs=[epoch_line(i + 1, acc) for i, acc in enumerate(curve)],
            summary=summary(TEST_ACCURACY[optimizer, seed], len(curve)),
        )
    return root
