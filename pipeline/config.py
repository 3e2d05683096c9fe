"""The run config: typed, frozen dataclasses parsed from YAML and `--set` overrides.

Parsing is strict: an unknown key, a value of the wrong type or a value outside
its allowed set is a `ConfigError` (a ValueError) that names the key, the value
and what is allowed. Names that live in registries (activation, loss, optimizer,
data set) and the model's shapes are checked by `pipeline.spec.validate`, which
`load_config` runs before anything trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


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
    # folder of the data (folder, mnist, fashion_mnist, cifar10); made absolute when
    # parsed (against the working directory), as Ray workers run in another one
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


# ---------------------------------------------------------------- parsing


def parse_config(data: Any, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Parse a mapping (from YAML or JSON) plus `key=value` overrides into a RunConfig."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top, got {type(data).__name__}")
    try:
        data = json.loads(json.dumps(data))  # a deep copy we may change
    except (TypeError, ValueError, RecursionError) as exc:  # dates, bytes, sets, cycles (YAML)
        raise ConfigError(
            f"config: {exc}; values must be strings, numbers, booleans, lists or mappings"
        ) from None
    for item in overrides:
        apply_override(data, item)
    cfg = _build(RunConfig, data, "")
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, root=resolve_root(cfg.data.root))
    )


def resolve_root(root: str | None) -> str | None:
    """`data.root` as an absolute path: `~` expanded, a relative one joined to the cwd.

    Done where the config enters (the driver), so the dict sent to Ray workers, which
    start in another directory, carries the absolute path; an absolute one stays as it
    is, so parsing the resolved dict again gives the same config.
    """
    if root is None:
        return None
    if not root.strip():
        raise ConfigError(f"data.root: {root!r} is not allowed; must be a folder path or null")
    path = os.path.expanduser(root)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(os.getcwd(), path))


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply overrides, and check it fully (names, shapes)."""
    cfg = parse_config(read_config_file(path), overrides)
    from pipeline.spec import validate  # registries import torch: only when checking

    validate(cfg)
    return cfg


def read_config_file(path: str | Path) -> Any:
    """A config file's YAML as plain data; every way it can be unreadable is a ConfigError
    naming the file (sweeps and the demo read the mapping, then expand it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date like 2001-02-31
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a run config") from None
    return data


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's error on one line: the problem and where (its own text spans several)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` override; the value is read as YAML (1, 0.1, true, [a, b])."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. optimizer.name=adam")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: a date like 2001-02-31
        value = raw
    except RecursionError:
        raise ConfigError(f"override {key!r}: the value is nested too deeply") from None
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_index(node, part, where)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {where} is not a section")
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {key!r}: its parent is not a section")


def _index(items: list[Any], part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"override {where!r}: index must be 0..{len(items) - 1}")
    return int(part)


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}unknown key {unknown[0]!r}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if all(dataclasses.is_dataclass(a) for a in options) and len(options) > 1:
            return _build_block(value, key)
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[-1]
            if len(options) == 1
            else f"{key}: {value!r} is not " + " or ".join(_type_name(o) for o in options)
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{key}: {value!r} is not allowed; allowed: " + ", ".join(str(a) for a in args)
            )
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if tp is ActivationSpec and isinstance(value, str):
        return ActivationSpec(name=value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"config type {tp!r} of {key} is not supported")  # a bug, not user input


def _build_block(value: Any, key: str) -> Any:
    if not isinstance(value, dict) or "type" not in value:
        raise ConfigError(f"{key}: a block is a mapping with type one of {', '.join(BLOCK_TYPES)}")
    kind = value["type"]
    if kind not in BLOCK_TYPES:
        raise ConfigError(f"{key}.type: {kind!r} is not allowed; allowed: {', '.join(BLOCK_TYPES)}")
    return _build(BLOCK_TYPES[kind], value, key)


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))
