"""The run config's types: typed, frozen dataclasses and `ConfigError`.

Everything in the pipeline that reads a config names these types, so they sit at
the bottom of the import graph with no parsing and no checks: the parser
(`pipeline.config`) fills them in, and the checks (`pipeline.spec`, the model
builder, the registries) read them, without any of those importing each other
in a circle. Callers outside the pipeline import them from `pipeline.config`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A config that cannot work; the message names the key and what is allowed."""


# ---------------------------------------------------------------- model spec


@dataclass(frozen=True)
class ActivationSpec:
    name: str = "relu"  # a registered activation: `stride models` lists them
    negative_slope: float = 0.1  # leaky_relu: a in max(a*x, x), 0 <= a < 1
    alpha: float = 1.0  # elu: x if x > 0 else alpha * (exp(x) - 1)
    pieces: int = 2  # maxout: k affine pieces per output; divides the width by k


@dataclass(frozen=True)
class ConvSpec:
    type: Literal["conv"]
    channels: int  # output channels of the convolution (before Maxout divides them)
    kernel: int = 3
    stride: int = 1
    padding: str | int = "same"  # valid (0) | same (k-1 in all) | full (k-1 each side) | int
    batch_norm: bool = False
    activation: ActivationSpec | None = None  # None: the model's default activation
    dropout: float = 0.0  # 2-D dropout after the activation


@dataclass(frozen=True)
class PoolSpec:
    type: Literal["pool"]
    kind: Literal["max", "mean"] = "max"
    size: int = 2
    stride: int | None = None  # None: equal to size (non-overlapping windows)


@dataclass(frozen=True)
class DropoutSpec:
    type: Literal["dropout"]
    p: float = 0.5


Block = Union[ConvSpec, PoolSpec, DropoutSpec]  # noqa: UP007 (the parser reads the args)
BLOCK_TYPES: dict[str, type] = {"conv": ConvSpec, "pool": PoolSpec, "dropout": DropoutSpec}


@dataclass(frozen=True)
class HeadSpec:
    global_pool: Literal["none", "max", "mean"] = "none"  # none: flatten C*H*W features
    hidden: tuple[int, ...] = ()  # widths of hidden dense layers (Maxout divides them by k)
    batch_norm: bool = False  # 1-D batch norm after each hidden layer
    dropout: float = 0.0  # before every dense layer, the last included
    activation: ActivationSpec | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str = "cnn"  # used in run ids and as the default model name on export
    activation: ActivationSpec = field(default_factory=ActivationSpec)
    # weight initialiser of every conv and dense layer (`stride models` lists them with
    # their formulas); its gain comes from the activation that follows the layer
    init: str = "default"
    blocks: tuple[Block, ...] = ()
    head: HeadSpec = field(default_factory=HeadSpec)


# ---------------------------------------------------------------- the rest


@dataclass(frozen=True)
class AugmentSpec:
    crop_padding: int = 0  # random crop of the original size after zero padding (pixels)
    rotation: float = 0.0  # random rotation in [-r, r] degrees
    horizontal_flip: bool = False  # only where the classes allow it (not digits)
    vertical_flip: bool = False


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"  # a registered data set: `stride models` lists them
    # folder of the data (folder, parquet, mnist, fashion_mnist, cifar10), or a URI
    # (s3://BUCKET/PREFIX, options in the query) for folder and parquet; a path is made
    # absolute when parsed (against the working directory), as Ray workers run elsewhere
    root: str | None = None
    download: bool = False  # torchvision sets only; the CLI's --download sets it
    split_seed: int = 0  # fixes the train/val/test split, independent of the run's seed
    val_fraction: float = 0.15
    test_fraction: float = 0.15  # ignored where the data set has its own test split
    image_size: tuple[int, int] | None = None  # (H, W) for folder and synthetic data
    channels: int | None = None  # 1 or 3, for folder and synthetic data
    num_classes: int | None = None  # synthetic data only
    num_samples: int = 2048  # synthetic data only
    normalize: bool = True  # per-channel mean/std computed on the training split
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    # Ray Data streaming (folder and parquet): auto streams a source that is a URI or
    # whose decoded images exceed memory_budget_mb; false loads every split into memory
    streaming: Literal["auto", True, False] = "auto"
    memory_budget_mb: float = 2048.0  # auto: decoded images (uint8) above this stream
    max_bad_fraction: float = 0.0  # of a split's images that may be unreadable (skipped)
    shuffle_buffer_mb: float = 64.0  # per worker: the local shuffle buffer, in image bytes
    prefetch_batches: int = 2  # per worker: batches Ray Data prepares ahead of the step
    task_cpus: float = 0.5  # CPUs each Ray Data read/decode task reserves
    object_store_mb: float = 256.0  # Ray Data's object store budget per streamed split


@dataclass(frozen=True)
class LossSpec:
    name: str = "cross_entropy"


@dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adam"
    lr: float | None = None  # None: the optimizer's default (`stride models`)
    weight_decay: float | None = None  # L2 penalty (decoupled for adamw); None: default
    momentum: float | None = None  # momentum / nesterov / rmsprop; None: default
    betas: tuple[float, float] | None = None  # adam family; None: default
    eps: float | None = None


@dataclass(frozen=True)
class ScheduleSpec:
    name: Literal["none", "step", "cosine"] = "none"
    warmup_epochs: float = 0.0  # linear warm-up from 0, per step, before the schedule
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    min_lr_factor: float = 0.0  # cosine: final lr as a fraction of the initial lr


@dataclass(frozen=True)
class TrainingSpec:
    epochs: int = 30
    batch_size: int = 64  # per worker
    eval_batch_size: int = 512
    grad_clip: float | None = None  # clip the global gradient norm to this value
    progress: bool = True  # a progress bar per epoch (rank 0)


@dataclass(frozen=True)
class EarlyStoppingSpec:
    enabled: bool = True
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = 5  # epochs without improvement before stopping
    min_delta: float = 0.0  # smallest change that counts as an improvement
    restore_best: bool = True  # end with the weights of the best epoch


@dataclass(frozen=True)
class ScalingSpec:
    workers: int = 1  # Ray Train workers (data parallel)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # fractional values share a GPU between runs
    max_failures: int = 0  # worker failures to recover from (resume from the checkpoint)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on GPU
    channels_last: bool = True  # GPU only


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    early_stopping: EarlyStoppingSpec = field(default_factory=EarlyStoppingSpec)
    scaling: ScalingSpec = field(default_factory=ScalingSpec)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-ready data (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def hash(self) -> str:
        """A short, stable hash of the resolved config (provenance in exports)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
