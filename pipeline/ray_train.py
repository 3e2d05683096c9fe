"""Training on Ray Train (V2): the same Trainer, run by TorchTrainer workers.

Ray touches the loop only through `RayContext`: the device Ray assigned, DDP
(`prepare_model`), distributed sampling (`prepare_data_loader`), an all-reduce of
the epoch's sums, and `ray.train.report` with a checkpoint every epoch. Rank 0
writes the run directory; Ray keeps its checkpoints in `<run>/checkpoints/`
(storage_path is the run directory, on a shared disk or an object store), so a
worker that dies resumes from the last epoch, and `--resume` after the whole job
died starts from the newest one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import RunConfig, parse_config
from pipeline.optim import optimizer_kwargs
from pipeline.run import config_record, data_record, failed_summary, resolve_run
from pipeline.train import CHECKPOINT, Trainer
from runstore import EpochRecord, Follower, RunDir, StoreLocation, SummaryRecord, diverged
from runstore.files import ArrowFiles

log = logging.getLogger(__name__)
RAY_CHECKPOINTS = "checkpoints"  # RunConfig.name under the run directory


def ensure_ray(address: str | None = None) -> dict[str, float]:
    """Connect to `address` (or RAY_ADDRESS), or start a local instance; returns resources."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        # Worker logs stay in Ray's log folder unless STRIDE_RAY_LOGS=1: progress comes from
        # the run store, and a failed run's error is raised on the driver anyway.
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": os.environ.get("STRIDE_RAY_LOGS") == "1",
            "logging_level": logging.WARNING,
        }
        if address:
            ray.init(address=address, **kwargs)
        else:
            # A local instance's processes inherit this environment. Ray Train's controller
            # notices a finished worker group on its health-check poll (2 s by default);
            # polling faster saves seconds per run, which adds up over a sweep of short runs.
            os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
            ray.init(**kwargs)
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def needs(cfg: RunConfig) -> dict[str, float]:
    """The CPUs and GPUs one run takes while it trains (all its workers)."""
    s = cfg.scaling
    need = {"CPU": s.workers * s.cpus_per_worker}
    if s.use_gpu:
        need["GPU"] = s.workers * s.gpus_per_worker
    return need


def check_fits(cfg: RunConfig, resources: dict[str, float], what: str = "the run") -> None:
    """Refuse a run the cluster can never place, rather than wait for it forever: Ray
    queues a placement group that does not fit until nodes join (the deploy's cluster is
    fixed-size). One worker must fit on one node; this checks the cluster's totals. A
    streamed data set also needs `data.task_cpus` beside the workers for its Ray Data
    tasks, which would otherwise wait for a CPU the workers never free."""
    from pipeline.streaming import data_reserve

    need = needs(cfg)
    fits = all(resources.get(k, 0.0) + 1e-9 >= v for k, v in need.items())
    reserve = data_reserve(cfg) if fits else 0.0
    if reserve and resources.get("CPU", 0.0) + 1e-9 < need["CPU"] + reserve:
        raise ValueError(
            f"{what} streams its data: its workers take {need['CPU']:g} CPU and Ray Data "
            f"needs data.task_cpus={reserve:g} more, but the cluster has "
            f"{resources.get('CPU', 0.0):g} CPU; lower scaling.cpus_per_worker or "
            "data.task_cpus, or add nodes (CPU-only nodes serve Ray Data too)"
        )
    if fits:
        return
    wanted = " and ".join(f"{v:g} {k}" for k, v in need.items())
    have = " and ".join(f"{resources.get(k, 0.0):g} {k}" for k in need)
    if need.get("GPU") and not resources.get("GPU"):
        hint = "drop --gpu (scaling.use_gpu) or connect to a cluster with GPUs (--address)"
    else:
        hint = (
            "lower scaling.workers, scaling.cpus_per_worker or scaling.gpus_per_worker, "
            "or add nodes"
        )
    raise ValueError(f"{what} needs {wanted} but the cluster has {have}; {hint}")


class RayContext:
    """The TrainContext of one Ray Train worker."""

    def __init__(self, cfg: RunConfig, run: RunDir) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device() if cfg.scaling.use_gpu else torch.device("cpu")
        self._tmp = Path(tempfile.mkdtemp(prefix="stride-ckpt-"))
        self.run = run

    def close(self) -> None:
        """Remove this worker's staging folder (checkpoint copies); a sweep of many runs
        would otherwise fill /tmp."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model, move_to_device=self.device)

    def prepare_loader(self, loader: torch.utils.data.DataLoader) -> Any:
        import ray.train.torch

        # The loop moves batches itself (and normalises them on the device).
        return ray.train.torch.prepare_data_loader(loader, move_to_device=False)

    def prepare_eval_loader(self, loader: torch.utils.data.DataLoader) -> Any:
        """A shard without the padding DistributedSampler adds, so reduced sums are exact."""
        dataset = loader.dataset
        shard = torch.utils.data.Subset(dataset, range(self.rank, len(dataset), self.world_size))  # type: ignore[arg-type]
        return torch.utils.data.DataLoader(
            shard, batch_size=loader.batch_size, collate_fn=loader.collate_fn
        )

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1 and torch.distributed.is_initialized():
            tensor = tensor.clone()
            torch.distributed.all_reduce(tensor)
        return tensor

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint in the run's storage that loads.

        Ray's own (`get_checkpoint`) is one of those folders, but its controller collects
        reports on its health-check poll, so when a worker died it can lag one behind the
        newest already persisted; the storage listing is read first, newest first, and
        only the first that loads is fetched."""
        import ray.train

        for i, rel in enumerate(reversed(ray_checkpoints(self.run))):
            path = self.run.files.download(rel, self._tmp / f"stored-{i}")
            if checkpoint_epoch(path) is not None:
                return path
        checkpoint = ray.train.get_checkpoint()  # storage that cannot be listed
        if checkpoint is None:
            return None
        target = self._tmp / "restore"
        shutil.rmtree(target, ignore_errors=True)
        path = Path(checkpoint.to_directory(str(target)))
        return path if checkpoint_epoch(path) is not None else None

    def report(self, record: EpochRecord, save: Callable[[Path], None]) -> None:
        import ray.train

        scalars = {k: v for k, v in vars(record).items() if isinstance(v, int | float)}
        with tempfile.TemporaryDirectory(dir=self._tmp) as directory:
            checkpoint = None
            if self.rank == 0:
                save(Path(directory))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(scalars, checkpoint=checkpoint)  # every worker: it is a barrier


def worker_loop(payload: dict[str, Any]) -> None:
    """What each Ray Train worker runs: build the Trainer, fit, rank 0 writes the results."""
    cfg = parse_config(payload["config"])
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    runs = StoreLocation.from_absolute(payload["runs"])
    run = RunDir.at(runs, payload["experiment"], payload["run_id"])
    ctx = RayContext(cfg, run)
    stream = None
    if payload.get("stream"):
        import ray.train

        from pipeline.streaming import SPLITS, Stream, StreamMeta

        shards = {name: ray.train.get_dataset_shard(name) for name in SPLITS}
        stream = Stream(StreamMeta.from_dict(payload["stream"]), shards)
    try:
        _fit_on_worker(cfg, ctx, run, payload.get("grid"), stream)
    finally:
        ctx.close()


def _fit_on_worker(
    cfg: RunConfig,
    ctx: RayContext,
    run: RunDir,
    grid: dict[str, Any] | None,
    stream: Any = None,
) -> None:
    trainer = Trainer(cfg, ctx, run, stream=stream)
    if ctx.rank == 0 and not run.exists():
        per_worker = cfg.training.batch_size
        run.write_config(
            config_record(
                cfg,
                run,
                grid=grid,
                data=data_record(trainer),
                effective={
                    "workers": ctx.world_size,
                    "batch_size_per_worker": per_worker,
                    "batch_size": per_worker * ctx.world_size,  # what one optimizer step sees
                    "lr": trainer.optimizer.param_groups[0]["initial_lr"],
                    "lr_scaling": "none: the configured lr applies to the effective batch",
                    "device": str(ctx.device),
                    "optimizer": optimizer_kwargs(cfg.optimizer),  # what it was built with
                    "ray": True,
                },
            )
        )
    summary = trainer.fit()
    if ctx.rank == 0:
        trainer.save_final_model()
        run.write_summary(summary)


@contextlib.contextmanager
def _sigint_kept() -> Iterator[None]:
    """Ray Train sets a SIGINT handler for a run (Ctrl-C aborts it gracefully) and leaves
    it set afterwards; the handler holds the run's TrainController, which then stays
    alive with its DatasetManager, polling, until the next run replaces it. Put the
    process's own handler back once the run ends."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def ray_checkpoints(run: RunDir) -> list[str]:
    """Checkpoint folders Ray persisted for a run (relative to it), oldest first (their
    names sort by time)."""
    files = run.files
    found = [
        f"{RAY_CHECKPOINTS}/{name}"
        for name in files.list_dirs(RAY_CHECKPOINTS)
        if name.startswith("checkpoint_")
        and files.is_file(f"{RAY_CHECKPOINTS}/{name}/{CHECKPOINT}")
    ]
    if files.is_file(f"{RAY_CHECKPOINTS}/{CHECKPOINT}"):  # a run begun with --local
        found.insert(0, RAY_CHECKPOINTS)
    return found


def checkpoint_epoch(directory: Path) -> int | None:
    """The epoch a checkpoint holds, or None when it does not load (a partial copy)."""
    try:
        state = torch.load(directory / CHECKPOINT, map_location="cpu", weights_only=True)
        return int(state["epoch"])
    except Exception:  # any unreadable file is simply not a candidate
        return None


def train_on_ray(
    cfg: RunConfig,
    *,
    runs: StoreLocation | str | os.PathLike[str],
    experiment: str,
    name: str | None = None,
    resume: bool = False,
    grid: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
) -> tuple[RunDir, SummaryRecord]:
    """One run through TorchTrainer; Ray must be initialised (see `ensure_ray`). A path
    `runs` is resolved here, in the driver's working directory, before Ray sees it.
    `callbacks` go to Ray Train's RunConfig (a sweep trial passes Tune's report callback)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipeline.streaming import wants_streaming

    runs = StoreLocation.parse(runs)
    run = resolve_run(runs, experiment, name, cfg, resume)
    if resume:
        run.delete_summary()  # the failed attempt's; this one writes its own
    data: dict[str, Any] = {}
    stream_meta = None
    if wants_streaming(cfg.data):  # planned here: a bad data set fails before any worker
        from pipeline.ray_data import SplitDataConfig, build_datasets
        from pipeline.streaming import open_stream

        plan = open_stream(cfg)
        stream_meta = plan.meta.to_dict()
        data = {
            "datasets": build_datasets(plan, cfg.data, cfg.seed),
            "dataset_config": SplitDataConfig(cfg.data.object_store_mb),
        }
    s = cfg.scaling
    resources: dict[str, float] = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    # On --resume the workers find the newest checkpoint in the run directory themselves
    # (RayContext.latest_checkpoint), so nothing is passed to the trainer for it.
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "config": cfg.to_dict(),
            # absolute, or a URI with its options: the workers open the store themselves
            "runs": runs.uri,
            "experiment": experiment,
            "run_id": run.name,
            "grid": grid or {},
            "stream": stream_meta,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=s.workers, use_gpu=s.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=RAY_CHECKPOINTS,
            **_ray_storage(run),
            failure_config=ray.train.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
        **data,
    )
    try:
        with _sigint_kept():
            trainer.fit()
    except Exception as exc:
        reason = _failure_reason(exc)
        summary = run.read_summary()
        # Rank 0 wrote the summary of a run that completed before the error, or of one
        # that diverged (`failure: "diverged"`); the exception that reaches here is Ray's
        # wrapper, so the file, not its type, says which.
        if summary is None or (summary.status != "completed" and not diverged(summary)):
            run.write_summary(failed_summary(reason))
        raise RunFailedError(f"run {run.name} failed: {reason}") from exc
    summary = run.read_summary()
    if summary is None:
        raise RuntimeError(f"run {run.name} ended without writing summary.json")
    return run, summary


class RunFailedError(RuntimeError):
    """A run that started and failed; the message says why (the innermost error)."""


def _ray_storage(run: RunDir) -> dict[str, Any]:
    """RunConfig's storage arguments: the run's folder, or its prefix on an object store."""
    local = run.local_path
    if local is not None:
        return {"storage_path": str(local.resolve())}
    files = run.files
    assert isinstance(files, ArrowFiles)
    return {"storage_path": files.base, "storage_filesystem": files.fs}


def _failure_reason(exc: BaseException) -> str:
    """The innermost error's type and message: what a person needs to fix the run."""
    seen = exc
    while seen.__cause__ is not None and seen.__cause__ is not seen:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return f"{type(seen).__name__}: {text[-1] if text else ''}"[:2000]


def follow_run(
    run: RunDir, on_epoch: Callable[[EpochRecord], None], done: Any, interval: float = 0.5
) -> None:
    """Call `on_epoch` for each new epoch of a run (once each, also across a resume)
    until `done` is set."""
    follower = Follower(run)
    while True:
        finished = done.wait(interval)
        for event in follower.poll():
            if event.epoch is not None:
                on_epoch(event.epoch)
        if finished:
            return
        if follower.ended:  # a summary of an earlier attempt (--resume deletes it): go on
            follower = Follower(run, after_epoch=follower.sent)
