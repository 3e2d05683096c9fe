"""One training run end to end in this process: run directory, config.json,
the Trainer, summary.json. Ray's workers call the same pieces (pipeline.ray_train)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from pipeline.config import RunConfig
from pipeline.optim import optimizer_kwargs
from pipeline.train import DivergenceError, LocalContext, Trainer
from runstore import (
    ConfigRecord,
    EpochRecord,
    RunDir,
    StoreLocation,
    SummaryRecord,
    new_run_id,
    utc_now,
)

log = logging.getLogger(__name__)


def config_record(
    cfg: RunConfig,
    run: RunDir,
    *,
    grid: dict[str, Any] | None = None,
    effective: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> ConfigRecord:
    """The content of config.json (docs/formats.md); `data` is `data_record`'s (else the
    layer table takes the shapes from the data set's description)."""
    from pipeline.spec import layer_table

    return ConfigRecord(
        experiment=run.experiment,
        run_id=run.name,
        created_at=utc_now(),
        config=cfg.to_dict(),
        config_hash=cfg.hash(),
        grid=grid or {},
        code_version=code_version(),
        versions=library_versions(),
        effective=effective or {},
        data=data or {},
        layers=layer_table(cfg, data),
    )


def data_record(trainer: Trainer) -> dict[str, Any]:
    """What export needs to rebuild the preprocessing (shapes, classes, mean and std),
    the split sizes the run used, and where the data came from (`source`: a streamed or
    packed data set's location without credentials and its manifest's checksum)."""
    info = trainer.info
    record = {
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "mean": list(trainer.data_mean),
        "std": list(trainer.data_std),
        "sizes": dict(trainer.sizes),
    }
    source = data_source(trainer)
    if source is not None:
        record["source"] = source
    return record


def data_source(trainer: Trainer) -> dict[str, Any] | None:
    """config.json's data.source for folder and parquet data (None for the bundled and
    torchvision sets, which the config names fully)."""
    if trainer.stream is not None:
        return dict(trainer.stream.meta.record())
    spec = trainer.cfg.data
    if spec.name not in ("folder", "parquet") or spec.root is None:
        return None
    from pipeline.datafiles import DataRoot

    record: dict[str, Any] = {
        "name": spec.name,
        "location": str(DataRoot.parse(spec.root)),
        "streaming": False,
    }
    if spec.name == "parquet":
        from pipeline.packed import parquet_manifest

        record["manifest_checksum"] = parquet_manifest(spec).checksum
    return record


def failed_summary(reason: str) -> SummaryRecord:
    """summary.json of a run that an error ended (`failure: "error"`): anything but a
    divergence, which the train loop records itself (`DivergenceError`)."""
    return SummaryRecord(status="failed", failure="error", reason=reason, finished_at=utc_now())


def record_failure(run: RunDir, exc: BaseException) -> None:
    """summary.json after `exc` ended a run trained in this process: a divergence keeps
    the summary the train loop wrote; any other error is recorded as one."""
    if not isinstance(exc, DivergenceError):
        run.write_summary(failed_summary(f"{type(exc).__name__}: {exc}"))


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in ("stride", "torch", "torchvision", "ray", "numpy", "onnx", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def code_version() -> str:
    """Stride's installed version plus the git revision of the source tree, when there is
    one (from the package metadata: the library does not import the command line)."""
    try:
        version = metadata.version("stride")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{version}+g{rev}" if rev else version


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
    summary = run.read_summary() if resume else None
    if summary is not None and summary.status == "completed":
        raise ValueError(f"--resume: run {run} has already completed")
    return RunDir.create(runs, experiment, run_id)


def train_local(
    cfg: RunConfig,
    *,
    runs: StoreLocation | str | os.PathLike[str],
    experiment: str,
    name: str | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> tuple[RunDir, SummaryRecord]:
    """Train one run in this process (no Ray) and write its run directory."""
    if cfg.scaling.use_gpu and not torch.cuda.is_available():  # before the folder is made
        raise ValueError(
            "scaling.use_gpu is true but this machine has no CUDA device; drop --gpu or "
            "train on a GPU machine"
        )
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
                        "optimizer": optimizer_kwargs(cfg.optimizer),  # what it was built with
                    },
                )
            )
        summary = trainer.fit()
        trainer.save_final_model()
    except Exception as exc:
        record_failure(run, exc)
        raise
    finally:
        ctx.close()
    run.write_summary(summary)
    return run, summary
