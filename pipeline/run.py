"""One training run end to end in this process: run directory, config.json,
the Trainer, summary.json. Ray's workers call the same pieces (pipeline.ray_train)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pipeline.config import RunConfig
from pipeline.runstore import (
    RunDir,
    StoreLocation,
    code_version,
    library_versions,
    new_run_id,
    utc_now,
)
from pipeline.train import LocalContext, Trainer

log = logging.getLogger(__name__)


def config_record(
    cfg: RunConfig,
    run: RunDir,
    *,
    grid: dict[str, Any] | None = None,
    effective: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of config.json (docs/formats.md)."""
    return {
        "schema": 1,
        "experiment": run.experiment,
        "run_id": run.name,
        "created_at": utc_now(),
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "grid": grid or {},
        "code_version": code_version(),
        "versions": library_versions(),
        "effective": effective or {},
        "data": data or {},
    }


def data_record(trainer: Trainer) -> dict[str, Any]:
    """What export needs to rebuild the preprocessing: shapes, classes, mean and std."""
    s = trainer.splits
    return {
        "input_shape": list(s.info.input_shape),
        "num_classes": s.info.num_classes,
        "class_names": list(s.info.class_names),
        "mean": list(s.mean),
        "std": list(s.std),
        "sizes": {"train": len(s.train), "val": len(s.val), "test": len(s.test)},
    }


def failed_summary(reason: str) -> dict[str, Any]:
    return {
        "status": "failed",
        "reason": reason,
        "test_loss": None,
        "test_accuracy": None,
        "finished_at": utc_now(),
    }


def resolve_run(
    runs: StoreLocation, experiment: str, name: str | None, cfg: RunConfig, resume: bool
) -> RunDir:
    """The run directory for a new run, or the existing one for --resume. Every check
    comes before anything is created: a refused command leaves nothing behind."""
    run_id = name or new_run_id(cfg.model.name)
    run = RunDir.at(runs, experiment, run_id)
    if run.exists() and not resume:
        raise ValueError(
            f"run {run} already exists; pass --resume to continue it or choose another --name"
        )
    if resume and not run.exists():
        raise ValueError(f"--resume: no run at {run} to continue")
    if resume and (run.read_summary() or {}).get("status") == "completed":
        raise ValueError(f"--resume: run {run} has already completed")
    return RunDir.create(runs, experiment, run_id)


def train_local(
    cfg: RunConfig,
    *,
    runs: StoreLocation | str | os.PathLike[str],
    experiment: str,
    name: str | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[RunDir, dict[str, Any]]:
    """Train one run in this process (no Ray) and write its run directory."""
    run = resolve_run(StoreLocation.parse(runs), experiment, name, cfg, resume)
    ctx = LocalContext(cfg.scaling.use_gpu, run, resume=resume)
    try:
        trainer = Trainer(cfg, ctx, run, on_epoch=on_epoch)
        if not resume:
            run.write_config(
                config_record(
                    cfg,
                    run,
                    data=data_record(trainer),
                    effective={
                        "workers": 1,
                        "batch_size": cfg.training.batch_size,
                        "lr": trainer.optimizer.param_groups[0]["initial_lr"],
                        "device": str(ctx.device),
                    },
                )
            )
        summary = trainer.fit()
        trainer.save_final_model()
    except Exception as exc:
        run.write_summary(failed_summary(f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        ctx.close()
    run.write_summary(summary)
    return run, summary
