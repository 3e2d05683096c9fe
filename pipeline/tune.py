"""One sweep trial on Ray Tune: one training run, one run directory.

Tune calls `run_trial` in a trial actor with the sampled values and the seed. A
single-worker run trains right there, in the trial's own process, through
`TuneContext` (no worker group to start: the fixed cost of a trial is the loop's
imports and data); Tune keeps its checkpoints and restarts it from the last one. A
multi-worker run starts a TorchTrainer from the trial (Ray Train's pattern for Train
inside Tune), whose workers hand their epochs to Tune through `TuneReportCallback`.

The trial's run id is made from its values, its seed and Tune's trial id, so the
driver (the live view, ASHA's stopped summaries, `--resume`) finds the same
directory without being told.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import ConfigError, RunConfig, parse_config
from pipeline.optim import optimizer_kwargs
from pipeline.ray_train import checkpoint_epoch, train_on_ray
from pipeline.run import config_record, data_record, record_failure
from pipeline.train import CHECKPOINT, Trainer
from runstore import EpochRecord, RunDir, StoreLocation, SummaryRecord, check_name
from runstore.names import values_label

AXES = "axes"  # Tune config: {config key: value} of this trial
SEED = "seed"  # Tune config: the trial's seed (grid and random search)
TRIAL_INDEX = "__trial_index__"  # Tune config: the repeat index (Optuna with seeds)
DRIVER_BUNDLE: dict[str, float] = {
    "memory": 2**20
}  # a multi-worker trial's reservation: no CPU (1 MiB)


def trial_values(tune_config: dict[str, Any]) -> dict[str, Any]:
    """The searched config keys and this trial's values, in the plan's order."""
    return dict(tune_config.get(AXES) or {})


def trial_seed(tune_config: dict[str, Any], base_seed: int) -> int:
    if SEED in tune_config:
        return int(tune_config[SEED])
    return base_seed + int(tune_config.get(TRIAL_INDEX, 0))


def trial_label(values: dict[str, Any]) -> str:
    """The values as the start of a run id, each reading as its value (runstore's
    `values_label`), e.g. `adam`, `sgd-0.0123_2` or `1e30`."""
    return values_label(values.values())


def trial_run_id(values: dict[str, Any], seed: int, trial_id: str) -> str:
    return check_name("run id", f"{trial_label(values)}-s{seed}-{trial_id}")


def _overrides(key: str, value: Any) -> list[str]:
    """`key=value` items; a mapping sets each of its keys, so that an axis can move
    several keys together (optimizer: {name: sgd, lr: 0.1}) and keep the others."""
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _overrides(f"{key}.{k}", v)]
    text = json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text.split("e")[0]:
        text = text.replace("e", ".0e")  # YAML 1.1 reads 1e-07 as a string, 1.0e-07 not
    return [f"{key}={text}"]


def trial_config(base: dict[str, Any], values: dict[str, Any], seed: int) -> RunConfig:
    """The run config of one trial: the sweep's base plus the trial's values and seed."""
    items = [item for k, v in values.items() for item in _overrides(k, v)]
    return parse_config(base, [*items, f"seed={seed}"])


def trial_resources(job: dict[str, Any], tune_config: dict[str, Any]) -> Any:
    """What Tune reserves for a trial. A single-worker trial trains in the trial actor, so
    it reserves the run's CPUs (and GPU share) there. A multi-worker trial only drives a
    TorchTrainer, whose workers reserve their own placement group: the trial must hold no
    CPU, or on a cluster the workers fill (2 workers of 1 CPU on 2 CPUs) their group waits
    for the core the trial holds and never starts. Tune refuses an empty reservation, so
    the trial holds a token of memory instead (DRIVER_BUNDLE)."""
    from ray.tune import PlacementGroupFactory

    values = trial_values(tune_config)
    cfg = trial_config(job["config"], values, trial_seed(tune_config, job["base_seed"]))
    s = cfg.scaling
    if s.workers > 1:
        return PlacementGroupFactory([DRIVER_BUNDLE])
    bundle: dict[str, float] = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        bundle["GPU"] = s.gpus_per_worker
    return PlacementGroupFactory([bundle])


class TuneContext:
    """The TrainContext of a single-worker run inside a Tune trial: one process, Tune's
    checkpoints (restored by Tune after a failure or `--resume`), `tune.report` per epoch."""

    rank = 0
    world_size = 1

    def __init__(self, cfg: RunConfig, trial_dir: Path | None = None) -> None:
        if cfg.scaling.use_gpu and not torch.cuda.is_available():
            raise ValueError("scaling.use_gpu is true but the trial sees no CUDA device")
        self.device = torch.device("cuda" if cfg.scaling.use_gpu else "cpu")
        self._tmp = Path(tempfile.mkdtemp(prefix="stride-ckpt-"))
        self._trial_dir = trial_dir  # Tune's folder of this trial, when on a local disk

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def prepare_loader(self, loader: torch.utils.data.DataLoader) -> Any:
        return loader

    prepare_eval_loader = prepare_loader

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def latest_checkpoint(self) -> Path | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return self._stored_checkpoint()
        target = self._tmp / "restore"
        shutil.rmtree(target, ignore_errors=True)
        path = Path(checkpoint.to_directory(str(target)))
        return path if (path / CHECKPOINT).is_file() else None

    def _stored_checkpoint(self) -> Path | None:
        """The newest checkpoint Tune persisted for this trial. Tune hands back the one
        its last experiment snapshot knew; a driver killed between snapshots leaves newer
        ones on disk, and `--resume` takes the newest that loads."""
        if self._trial_dir is None or not self._trial_dir.is_dir():
            return None
        for path in sorted(self._trial_dir.glob("checkpoint_*"), reverse=True):
            if checkpoint_epoch(path) is not None:
                return path
        return None

    def report(self, record: EpochRecord, save: Callable[[Path], None]) -> None:
        from ray import tune

        with tempfile.TemporaryDirectory(dir=self._tmp) as directory:
            save(Path(directory))
            # Tune copies the folder into the trial's storage before report returns.
            tune.report(epoch_metrics(record), checkpoint=tune.Checkpoint.from_directory(directory))


def epoch_metrics(record: EpochRecord) -> dict[str, float]:
    """The scalars of an epoch: what schedulers and searchers read."""
    return {k: v for k, v in vars(record).items() if isinstance(v, int | float)}


def final_metrics(summary: SummaryRecord) -> dict[str, Any]:
    """The last report of a finished trial: the kept model's validation figures (what
    the sweep selects by), so that a searcher scores the same thing."""
    return {
        "epoch": summary.epochs_run or 0,
        "val_accuracy": summary.val_accuracy,
        "val_loss": summary.val_loss,
        "done_training": True,
    }


def run_trial(tune_config: dict[str, Any], job: dict[str, Any]) -> None:
    """A Tune function trainable: train this trial's run (or finish reporting it when the
    run completed before a driver died) and write its run directory."""
    from ray import tune

    values = trial_values(tune_config)
    seed = trial_seed(tune_config, job["base_seed"])
    cfg = trial_config(job["config"], values, seed)
    trial_id = tune.get_context().get_trial_id()
    run_id = trial_run_id(values, seed, trial_id)
    runs = StoreLocation.from_absolute(job["runs"])
    run = RunDir.at(runs, job["experiment"], run_id)
    done = run.read_summary()
    if done is not None and done.status == "completed":  # finished before the driver died
        tune.report(final_metrics(done))
        return
    run = RunDir.create(runs, job["experiment"], run_id)
    run.delete_summary()  # a failed attempt's, when Tune retries or resumes the trial
    if cfg.scaling.workers > 1:
        summary = _fit_with_torch_trainer(cfg, runs, job["experiment"], run, values)
    else:
        tune_dir = job.get("tune_path", "")
        trial_dir = Path(tune_dir, trial_id) if tune_dir.startswith("/") else None
        summary = _fit_in_trial(cfg, run, values, trial_dir)
    tune.report(final_metrics(summary))


def _fit_in_trial(
    cfg: RunConfig, run: RunDir, values: dict[str, Any], trial_dir: Path | None
) -> SummaryRecord:
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    ctx = TuneContext(cfg, trial_dir)
    try:
        trainer = Trainer(cfg, ctx, run)
        if not run.exists():
            run.write_config(
                config_record(
                    cfg,
                    run,
                    grid=values,
                    data=data_record(trainer),
                    effective={
                        "workers": 1,
                        "batch_size": cfg.training.batch_size,
                        "lr": trainer.optimizer.param_groups[0]["initial_lr"],
                        "device": str(ctx.device),
                        "optimizer": optimizer_kwargs(cfg.optimizer),  # what it was built with
                        "tune": True,
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
    return summary


def _fit_with_torch_trainer(
    cfg: RunConfig, runs: StoreLocation, experiment: str, run: RunDir, values: dict[str, Any]
) -> SummaryRecord:
    from ray.tune.integration.ray_train import TuneReportCallback

    resume = run.exists()  # restarted: go on from Train's checkpoints
    _, summary = train_on_ray(
        cfg,
        runs=runs,
        experiment=experiment,
        name=run.name,
        resume=resume,
        grid=values,
        callbacks=[TuneReportCallback()],
    )
    return summary


def trainable(job: dict[str, Any]) -> Any:
    """`run_trial` with its job bound and its resources attached, for a Tuner."""
    from ray import tune

    fn = tune.with_parameters(run_trial, job=job)
    return tune.with_resources(fn, functools.partial(trial_resources, job))


def check_job(job: dict[str, Any]) -> None:
    """The job must travel as plain data with an absolute store (workers start elsewhere)."""
    StoreLocation.from_absolute(job["runs"])
    if not isinstance(job.get("config"), dict):
        raise ConfigError("sweep job: config must be the resolved base config")
