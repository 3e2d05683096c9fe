"""The train loop: plain PyTorch. Ray touches it only through a `TrainContext`
(prepare the data loader, prepare the model, reduce, report); `LocalContext` runs
it in one process.

Each epoch trains, validates, probes the activations on a fixed validation batch (dead
units, weight norm), writes one line to metrics.jsonl (rank 0), saves a checkpoint and
reports; early stopping ends it and restores the best weights; the
restored model is then scored on the test split and summary.json written.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pipeline.config import EarlyStoppingSpec, RunConfig
from pipeline.data import DataInfo, ImageDataset, Splits, build_augment, load_splits, make_loader
from pipeline.initialisers import WEIGHT_LAYERS
from pipeline.layers import Activation
from pipeline.losses import LOSSES
from pipeline.model import build_model, parameterised_layers
from pipeline.optim import build_optimizer, build_schedule
from runstore import CHECKPOINTS, EpochRecord, RunDir, SummaryRecord, utc_now

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"
PROBE_IMAGES = 256  # the fixed validation batch the dead units are counted on


class TrainContext(Protocol):
    """Where the loop runs: one process, or one Ray Train worker of several."""

    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: nn.Module) -> nn.Module: ...
    def prepare_loader(self, loader: torch.utils.data.DataLoader) -> Any: ...
    def prepare_eval_loader(self, loader: torch.utils.data.DataLoader) -> Any: ...
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor: ...
    def latest_checkpoint(self) -> Path | None: ...
    def report(self, record: EpochRecord, save: Callable[[Path], None]) -> None:
        """Called by every worker once per epoch; `save(dir)` writes the checkpoint (rank 0)."""

    def close(self) -> None:
        """Remove what the context staged on the local disk (checkpoint copies)."""


class LocalContext:
    """A single process on the CPU, or on the first GPU when the config asks for one."""

    rank = 0
    world_size = 1

    def __init__(
        self, use_gpu: bool = False, run: RunDir | None = None, resume: bool = False
    ) -> None:
        if use_gpu and not torch.cuda.is_available():
            raise ValueError("scaling.use_gpu is true but no CUDA device is available")
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self._run = run
        self._resume = resume
        self._tmp: Path | None = None  # staging for a run store that is not a local folder

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def prepare_loader(self, loader: torch.utils.data.DataLoader) -> Any:
        return loader

    prepare_eval_loader = prepare_loader

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def _checkpoint_dir(self) -> Path | None:
        if self._run is None:
            return None
        local = self._run.local_path
        if local is not None:
            return local / CHECKPOINTS
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="stride-ckpt-"))
        return self._tmp

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def latest_checkpoint(self) -> Path | None:
        d = self._checkpoint_dir()
        if not self._resume or self._run is None or d is None:
            return None
        if self._run.local_path is None:
            data = self._run.read_checkpoint_file(CHECKPOINT)
            if data is None:
                return None
            (d / CHECKPOINT).write_bytes(data)
        return d if (d / CHECKPOINT).exists() else None

    def report(self, record: EpochRecord, save: Callable[[Path], None]) -> None:
        d = self._checkpoint_dir()
        if d is None or self._run is None:
            return
        save(d)
        if self._run.local_path is None:
            self._run.write_checkpoint_file(CHECKPOINT, (d / CHECKPOINT).read_bytes())


DEVICE_BYTES = 2**30  # uint8 training images up to 1 GiB stay on the GPU


class DeviceLoader:
    """Batches of a split kept on the device: a fresh permutation each epoch (the same on
    every worker, each taking its own shard, padded like DistributedSampler)."""

    def __init__(
        self,
        split: Any,
        scale: float,
        batch_size: int,
        device: torch.device,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images = split.images.to(device)  # uint8 (N, C, H, W)
        self.labels = split.labels.to(device)
        self.scale, self.batch_size, self.seed = scale, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.per_worker = math.ceil(len(self.labels) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> DeviceLoader:  # so that the loop's set_epoch call finds it
        return self

    def __len__(self) -> int:
        return math.ceil(self.per_worker / self.batch_size)

    def __iter__(self) -> Any:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.labels), generator=g)
        padded = torch.cat([order, order[: self.per_worker * self.world_size - len(order)]])
        mine = padded[self.rank :: self.world_size].to(self.images.device)
        for start in range(0, len(mine), self.batch_size):
            idx = mine[start : start + self.batch_size]
            yield self.images[idx].float().div_(self.scale), self.labels[idx]


class DivergenceError(FloatingPointError):
    """The loss became non-finite: the run's own result, not an error around it. The
    loop has written summary.json (`failure: "diverged"`) before raising it."""

    def __init__(self, epoch: int, val_loss: float) -> None:
        super().__init__(epoch, val_loss)  # its args rebuild it where Ray unpickles it
        self.epoch, self.val_loss = epoch, val_loss

    def __str__(self) -> str:
        return f"epoch {self.epoch}: validation loss is {self.val_loss}; the run diverged"


class EarlyStopping:
    """Stops after `patience` epochs without an improvement of at least `min_delta`."""

    def __init__(self, spec: EarlyStoppingSpec) -> None:
        self.spec = spec
        self.sign = 1.0 if spec.metric == "val_loss" else -1.0  # minimise sign * value
        self.best_value: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record an epoch's metric; True when it is the best so far."""
        if self.best_value is None or self.sign * (self.best_value - value) > self.spec.min_delta:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.spec.enabled and self.bad_epochs >= self.spec.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = state["best_value"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Precision:
    """Mixed precision on CUDA: bf16 where supported, else fp16 with a loss scaler."""

    dtype: torch.dtype | None  # None: fp32
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False

    @classmethod
    def choose(cls, cfg: RunConfig, device: torch.device) -> Precision:
        if device.type != "cuda" or cfg.scaling.precision == "fp32":
            return cls(None)
        want = cfg.scaling.precision
        if want == "auto":
            want = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if want == "bf16":
            return cls(torch.bfloat16, None, cfg.scaling.channels_last)
        return cls(torch.float16, torch.amp.GradScaler("cuda"), cfg.scaling.channels_last)

    def autocast(self, device: torch.device) -> Any:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


@dataclass
class EpochSums:
    """Sums over the batches of one epoch, reduced across workers before use."""

    loss: torch.Tensor
    correct: torch.Tensor
    count: torch.Tensor
    grad: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # per layer norm sums
    steps: int = 0


class Trainer:
    """Everything one run needs, built once; `fit` runs the epochs."""

    def __init__(
        self,
        cfg: RunConfig,
        ctx: TrainContext,
        run: RunDir | None,
        splits: Splits | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        stream: Any = None,
    ) -> None:
        """`stream` (a `pipeline.streaming.Stream`): the data as a Ray Train worker's shards;
        without it a streamed data set (`data.streaming`) is planned and read here."""
        self.cfg, self.ctx, self.run, self.on_epoch = cfg, ctx, run, on_epoch
        seed_everything(cfg.seed)
        if stream is None and splits is None:
            stream = _local_stream(cfg)
        self.stream = stream
        self.splits = None if stream is not None else (splits or load_splits(cfg.data))
        if stream is not None:
            meta = stream.meta
            info = DataInfo(meta.shape, len(meta.class_names), meta.class_names)
            mean, std, self.sizes = meta.mean, meta.std, dict(meta.sizes)
        else:
            assert self.splits is not None
            info, mean, std = self.splits.info, self.splits.mean, self.splits.std
            self.sizes = {
                "train": len(self.splits.train),
                "val": len(self.splits.val),
                "test": len(self.splits.test),
            }
        self.info, self.data_mean, self.data_std = info, mean, std
        self.device = ctx.device
        self.precision = Precision.choose(cfg, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: autotune once
        model = build_model(cfg.model, input_shape=info.input_shape, num_classes=info.num_classes)
        if self.precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = ctx.prepare_model(model)
        self.raw_model: nn.Module = getattr(self.model, "module", self.model)
        self.layers = parameterised_layers(self.raw_model)
        self.loss_fn = LOSSES.get(cfg.loss.name)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        size = info.input_shape[1:]
        augment = build_augment(cfg.data.augment, (size[0], size[1]))
        if stream is not None:
            self._stream_loaders(stream, augment)
        else:
            self._memory_loaders(augment)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optimizer)
        steps = max(1, len(self.train_loader))
        self.scheduler = build_schedule(
            self.optimizer, cfg.schedule, steps_per_epoch=steps, epochs=cfg.training.epochs
        )
        self.stopper = EarlyStopping(cfg.early_stopping)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.start_epoch = 1
        self.elapsed = 0.0

    def _memory_loaders(self, augment: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        assert self.splits is not None
        cfg, ctx = self.cfg, self.ctx
        self.train_loader = self._train_loader(augment)
        self.val_loader = ctx.prepare_eval_loader(
            make_loader(
                ImageDataset(self.splits.val, self.splits.scale),
                cfg.training.eval_batch_size,
                shuffle=False,
                seed=cfg.seed,
            )
        )
        self.test_loader = ctx.prepare_eval_loader(
            make_loader(
                ImageDataset(self.splits.test, self.splits.scale),
                cfg.training.eval_batch_size,
                shuffle=False,
                seed=cfg.seed,
            )
        )
        # The first PROBE_IMAGES validation images, on every worker alike: (N, C, H, W)
        probe = self.splits.val.images[:PROBE_IMAGES].float() / self.splits.scale
        self.probe = self._inputs(probe, self.splits.val.labels[:PROBE_IMAGES])[0]

    def _stream_loaders(
        self, stream: Any, augment: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> None:
        """Loaders over Ray Data (pipeline.streaming): the same steps on every rank, every
        validation and test image once; evaluation runs on the unwrapped model, since
        ranks hold different numbers of evaluation batches."""
        from pipeline.streaming import StreamEval, StreamLoader, probe_images

        cfg, ctx = self.cfg, self.ctx
        self.train_loader = StreamLoader(
            stream,
            batch_size=cfg.training.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            device=self.device,
            augment=augment,
            seed=cfg.seed,
            spec=cfg.data,
        )
        self.val_loader, self.test_loader = (
            StreamEval(
                stream,
                split,
                batch_size=cfg.training.eval_batch_size,
                device=self.device,
                spec=cfg.data,
            )
            for split in ("val", "test")
        )
        probe = probe_images(stream.meta, PROBE_IMAGES).float() / 255.0  # (N, C, H, W)
        self.probe = self._inputs(probe, torch.zeros(len(probe), dtype=torch.int64))[0]

    def _train_loader(self, augment: Callable[[torch.Tensor], torch.Tensor] | None) -> Any:
        """On a GPU, a small un-augmented training set stays on the device and is batched
        there (no DataLoader); otherwise a DataLoader that Ray can shard."""
        assert self.splits is not None
        split, cfg = self.splits.train, self.cfg
        if self.device.type == "cuda" and augment is None and split.images.numel() < DEVICE_BYTES:
            return DeviceLoader(
                split,
                self.splits.scale,
                cfg.training.batch_size,
                self.device,
                seed=cfg.seed,
                rank=self.ctx.rank,
                world_size=self.ctx.world_size,
            )
        dataset = ImageDataset(split, self.splits.scale, augment)
        return self.ctx.prepare_loader(
            make_loader(dataset, cfg.training.batch_size, shuffle=True, seed=cfg.seed)
        )

    # ------------------------------------------------------------ one epoch

    def _inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        x = (x - self.mean) / self.std  # (N, C, H, W), normalised by the train split's stats
        if self.precision.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def train_epoch(self, epoch: int, progress: Any) -> EpochSums:
        self.model.train()
        set_epoch = getattr(getattr(self.train_loader, "sampler", None), "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)  # a new shuffle per epoch under DistributedSampler
        zero = torch.zeros((), device=self.device, dtype=torch.float64)
        sums = EpochSums(
            zero.clone(),
            zero.clone(),
            zero.clone(),
            torch.zeros(len(self.layers), device=self.device, dtype=torch.float64),
        )
        scaler = self.precision.scaler
        for x, y in self.train_loader:
            x, y = self._inputs(x, y)
            with self.precision.autocast(self.device):
                logits = self.model(x)  # (N, K)
                loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            sums.grad += self._layer_grad_norms()
            if self.cfg.training.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.training.grad_clip)
            if scaler is not None:
                scaler.step(self.optimizer)
                scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            n = y.shape[0]
            sums.loss += loss.detach().double() * n
            sums.correct += (logits.argmax(1) == y).sum()
            sums.count += n
            sums.steps += 1
            if progress is not None:
                progress.update(1)
                if sums.steps % 10 == 0:
                    progress.set_postfix(loss=f"{(sums.loss / sums.count).item():.4f}")
        return sums

    def _layer_grad_norms(self) -> torch.Tensor:
        """L2 norm of each parameterised layer's gradient (weights and bias together)."""
        norms = []
        for _, params in self.layers:
            grads = [p.grad for p in params if p.grad is not None]
            if not grads:
                norms.append(torch.zeros((), device=self.device))
                continue
            per_param = torch._foreach_norm(grads)
            norms.append(torch.linalg.vector_norm(torch.stack(per_param)))
        return torch.stack(norms).double()

    @torch.no_grad()
    def probe_units(self) -> tuple[tuple[tuple[str, float], ...], float]:
        """(dead units per activation layer, weight norm) of the current model.

        A unit is a channel of a convolution's output (one feature of a dense layer's),
        i.e. the activation's input channel; it is dead when the activation passes back
        less than DEAD_SLOPE of its peak slope (`Activation.flat`) at every position of
        every image of the fixed batch: its weights then get no gradient from that batch.
        Computed on the unwrapped model in eval mode, by every worker on the same batch
        (no collective calls), so all of them agree; only rank 0 writes it.
        """
        model = self.raw_model
        dead: dict[str, float] = {}

        def hook(name: str, module: Activation, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].float()  # (N, C, H, W) or (N, F)
            flat = module.flat(x).transpose(0, 1).reshape(x.shape[1], -1)  # (C, N*H*W)
            dead[name] = flat.all(dim=1).float().mean().item()

        handles = [
            module.register_forward_pre_hook(lambda m, i, name=name: hook(name, m, i))
            for name, module in model.named_modules()
            if isinstance(module, Activation)
        ]
        was_training = model.training
        model.eval()
        try:
            with self.precision.autocast(self.device):
                model(self.probe)
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        weights = [m.weight for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(weights))).item()
        return tuple(dead.items()), norm

    @torch.no_grad()
    def evaluate(self, loader: Any) -> tuple[float, float]:
        """(mean loss, accuracy) over a whole split, reduced across workers."""
        model = self.model
        if self.stream is not None:  # ranks hold different numbers of batches: no DDP
            model = self.raw_model
            self._sync_buffers()
        model.eval()
        totals = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss, correct, count
        for x, y in loader:
            x, y = self._inputs(x, y)
            with self.precision.autocast(self.device):
                logits = model(x).float()
            totals[0] += self.loss_fn(logits, y).double() * y.shape[0]
            totals[1] += (logits.argmax(1) == y).sum()
            totals[2] += y.shape[0]
        totals = self.ctx.all_reduce_sum(totals)
        count = max(totals[2].item(), 1.0)
        return totals[0].item() / count, totals[1].item() / count

    def _sync_buffers(self) -> None:
        """Rank 0's batch-norm statistics on every rank, as DDP's forward would broadcast
        them (its first forward in evaluation does), before evaluating without DDP."""
        if self.ctx.world_size > 1 and torch.distributed.is_initialized():
            for buffer in self.raw_model.buffers():
                torch.distributed.broadcast(buffer, 0)

    def skipped_images(self) -> int:
        """Unreadable images left out (data.max_bad_fraction), over all workers: one pass
        over each split."""
        if self.stream is None:
            return self.splits.skipped if self.splits is not None else 0
        from pipeline.streaming import skipped_count

        local = skipped_count(self.train_loader, self.val_loader, self.test_loader)
        total = self.ctx.all_reduce_sum(torch.tensor(float(local), device=self.device))
        return int(total.item())

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, epoch: int, directory: Path) -> None:
        """Everything a resume needs, as `directory/last.pt` (written atomically)."""
        state = {
            "epoch": epoch,
            "elapsed": self.elapsed,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "stopper": self.stopper.state_dict(),
            "best_model": self.best_state,
        }
        target = directory / CHECKPOINT
        tmp = target.with_name(f".{CHECKPOINT}.tmp")
        torch.save(state, tmp)
        tmp.replace(target)

    def restore(self, checkpoint_dir: Path) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, early stopping."""
        state = torch.load(checkpoint_dir / CHECKPOINT, map_location=self.device, weights_only=True)
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["stopper"])
        self.best_state = state["best_model"]
        self.start_epoch = int(state["epoch"]) + 1
        self.elapsed = float(state["elapsed"])
        if self.run is not None and self.ctx.rank == 0:
            self.run.keep_metrics_through(int(state["epoch"]))

    def save_final_model(self) -> None:
        """The weights export uses (the best epoch's, when restore_best): checkpoints/model.pt."""
        if self.run is None or self.ctx.rank != 0:
            return
        buffer = io.BytesIO()
        torch.save(self.raw_model.state_dict(), buffer)
        self.run.write_checkpoint_file("model.pt", buffer.getvalue())

    # ------------------------------------------------------------ the run

    def fit(self) -> SummaryRecord:
        """Train until the epochs run out or early stopping; return the summary."""
        cfg = self.cfg
        checkpoint = self.ctx.latest_checkpoint()
        resumed_from = None
        if checkpoint is not None:
            self.restore(checkpoint)
            resumed_from = self.start_epoch - 1
            log.warning("resuming from epoch %d", self.start_epoch)
        elif self.run is not None and self.ctx.rank == 0 and self.run.read_metrics():
            self.run.keep_metrics_through(0)  # starting over: earlier lines are void
        wall_start = time.perf_counter()
        progress = _progress_bar(cfg, self.ctx, len(self.train_loader))
        stopped_early = self.stopper.should_stop  # a resumed run may have stopped already
        epoch = self.start_epoch - 1
        try:
            while not stopped_early and epoch < cfg.training.epochs:
                epoch += 1
                stopped_early = self._one_epoch(epoch, progress)
        except DivergenceError as exc:
            self._record_divergence(exc, wall_start, resumed_from)
            raise
        finally:
            if progress is not None:
                progress.close()
        if cfg.early_stopping.restore_best and self.best_state is not None:
            self.raw_model.load_state_dict(self.best_state)
        # The kept model's validation figures: what a sweep selects by, never the test set.
        val_loss, val_acc = self.evaluate(self.val_loader)
        test_loss, test_acc = self.evaluate(self.test_loader)
        skipped = self.skipped_images()
        return SummaryRecord(
            status="completed",
            reason=None,
            val_loss=val_loss,
            val_accuracy=val_acc,
            test_loss=test_loss,
            test_accuracy=test_acc,
            best_epoch=self.stopper.best_epoch,
            best_metric=cfg.early_stopping.metric,
            best_value=self.stopper.best_value,
            epochs_run=epoch,
            stopped_early=stopped_early,
            wall_seconds=round(time.perf_counter() - wall_start, 3),
            train_seconds=round(self.elapsed, 3),
            device=_device_name(self.device),
            precision=self.precision.name,
            workers=self.ctx.world_size,
            resumed_from_epoch=resumed_from,  # the last restart's checkpoint, if any
            finished_at=utc_now(),
            skipped_images=skipped or None,
        )

    def _record_divergence(
        self, exc: DivergenceError, wall_start: float, resumed: int | None
    ) -> None:
        """summary.json of a diverged run, written here where the divergence is seen
        (rank 0): `failure: "diverged"` says it is the configuration's result, whatever
        the caller (a Ray worker, a Tune trial) makes of the exception."""
        if self.run is None or self.ctx.rank != 0:
            return
        self.run.write_summary(
            SummaryRecord(
                status="failed",
                failure="diverged",
                reason=f"{type(exc).__name__}: {exc}",
                best_epoch=self.stopper.best_epoch or None,
                best_metric=self.cfg.early_stopping.metric,
                best_value=self.stopper.best_value,
                epochs_run=exc.epoch - 1,  # metrics.jsonl ends with the last finite epoch
                wall_seconds=round(time.perf_counter() - wall_start, 3),
                train_seconds=round(self.elapsed, 3),
                device=_device_name(self.device),
                precision=self.precision.name,
                workers=self.ctx.world_size,
                resumed_from_epoch=resumed,
                finished_at=utc_now(),
            )
        )

    def _one_epoch(self, epoch: int, progress: Any) -> bool:
        if progress is not None:
            progress.reset()
            progress.set_description(f"epoch {epoch}/{self.cfg.training.epochs}")
        t0 = time.perf_counter()
        sums = self.train_epoch(epoch, progress)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - t0
        train = self.ctx.all_reduce_sum(
            torch.stack([sums.loss, sums.correct.double(), sums.count.double()])
        )
        grad = self.ctx.all_reduce_sum(sums.grad) / max(sums.steps * self.ctx.world_size, 1)
        val_loss, val_acc = self.evaluate(self.val_loader)
        epoch_seconds = time.perf_counter() - t0
        dead_units, weight_norm = self.probe_units()  # not counted in the epoch's seconds
        self.elapsed += epoch_seconds
        value = val_loss if self.cfg.early_stopping.metric == "val_loss" else val_acc
        if not math.isfinite(val_loss):
            raise DivergenceError(epoch, val_loss)
        if self.stopper.update(epoch, value):
            self.best_state = copy.deepcopy(self.raw_model.state_dict())
        count = max(train[2].item(), 1.0)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train[0].item() / count,
            train_accuracy=train[1].item() / count,
            val_loss=val_loss,
            val_accuracy=val_acc,
            lr=self.optimizer.param_groups[0]["lr"],
            grad_norms=tuple(
                (name, float(v)) for (name, _), v in zip(self.layers, grad.tolist(), strict=True)
            ),
            dead_units=dead_units,
            weight_norm=weight_norm,
            epoch_seconds=round(epoch_seconds, 4),
            elapsed_seconds=round(self.elapsed, 4),
            images_per_second=round(count / max(train_seconds, 1e-9), 1),
        )
        if self.run is not None and self.ctx.rank == 0:
            self.run.append_metrics(record)  # before the checkpoint: a resume redoes this epoch
        self.ctx.report(record, lambda directory: self.save_checkpoint(epoch, directory))
        if self.on_epoch is not None and self.ctx.rank == 0:
            self.on_epoch(record)
        return self.stopper.should_stop


def _local_stream(cfg: RunConfig) -> Any:
    """A streamed data set read in this process (plain loop or a Tune trial), or None
    when the config's data loads into memory."""
    from pipeline.streaming import wants_streaming

    if not wants_streaming(cfg.data):
        return None
    from pipeline.ray_data import build_datasets, init_ray
    from pipeline.streaming import Stream, open_stream

    init_ray()  # Ray Data's tasks run on this process's Ray (a local one if none)
    plan = open_stream(cfg)
    return Stream(plan.meta, build_datasets(plan, cfg.data, cfg.seed))


def _progress_bar(cfg: RunConfig, ctx: TrainContext, total: int) -> Any:
    if not cfg.training.progress or ctx.rank != 0:
        return None
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal only; epoch lines go to the log either way
    return tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True, disable=None)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"
