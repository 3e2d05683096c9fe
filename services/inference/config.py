"""Reading a model's `config.pbtxt` (Triton's ModelConfig in protobuf text) into `ModelSettings`.

The proto stays the source of truth (the ModelConfig RPC returns it as read);
`ModelSettings` is the checked, typed view the server runs on: tensors, batching,
queue policy, version policy, instances. Every problem raises `ModelConfigError`
naming the file, the field and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from services.common.errors import InvalidInput, shown
from services.generated.inference import model_config_pb2 as mc

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,17}")
PLATFORMS = ("onnxruntime_onnx",)
BACKENDS = ("onnxruntime", "")

# Protocol datatype names by config data type (Triton's mapping; TYPE_STRING is BYTES).
DATATYPE_NAMES = {
    mc.TYPE_BOOL: "BOOL",
    mc.TYPE_UINT8: "UINT8",
    mc.TYPE_UINT16: "UINT16",
    mc.TYPE_UINT32: "UINT32",
    mc.TYPE_UINT64: "UINT64",
    mc.TYPE_INT8: "INT8",
    mc.TYPE_INT16: "INT16",
    mc.TYPE_INT32: "INT32",
    mc.TYPE_INT64: "INT64",
    mc.TYPE_FP16: "FP16",
    mc.TYPE_FP32: "FP32",
    mc.TYPE_FP64: "FP64",
    mc.TYPE_STRING: "BYTES",
    mc.TYPE_BF16: "BF16",
}


class ModelConfigError(ValueError):
    """A model's config.pbtxt (or its files) is invalid; the model does not load."""


def check_model_name(name: str) -> str:
    """Return `name` if it is a valid model name; raise InvalidInput otherwise.

    The pattern has no slash and cannot be "." or "..", so a name never reaches
    outside the repository folder.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            f"invalid model name {shown(name)}: expected 1-128 characters of [A-Za-z0-9._-] "
            "starting with a letter or digit"
        )
    return name


def parse_version(version: str) -> int | None:
    """'' means 'the server's choice' (None); otherwise a positive integer, else InvalidInput."""
    if version == "":
        return None
    if not VERSION_PATTERN.fullmatch(version):
        raise InvalidInput(f"invalid model version {shown(version)}: expected a positive integer")
    return int(version)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: protocol datatype, dims without the batch dimension, labels file."""

    name: str
    datatype: str  # "FP32", ...
    dims: tuple[int, ...]  # -1 for a variable dimension
    label_filename: str = ""


@dataclass(frozen=True)
class ModelSettings:
    """The checked view of a ModelConfig that the server runs on."""

    name: str
    max_batch_size: int  # 0: no batch dimension
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_batching: bool
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    max_queue_size: int  # 0: unbounded
    default_timeout_us: int  # 0: none
    allow_timeout_override: bool
    instance_count: int
    use_gpu: bool | None  # True: must run on CUDA; False: CPU; None: CUDA when available
    graph_level: int  # -1 basic only, 0 default (all), 1 basic+extended


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a config.pbtxt; the model name defaults to the folder name, as in Triton."""
    try:
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ModelConfigError(f"{path}: not a valid ModelConfig in protobuf text: {exc}") from exc
    except ValueError as exc:  # protobuf's own check, e.g. an enum given a number past int32
        raise ModelConfigError(f"{path}: not a valid ModelConfig: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot read: {exc}") from exc
    folder = path.parent.name
    if not config.name:
        config.name = folder
    elif config.name != folder:
        raise ModelConfigError(f"{path}: name {config.name!r} differs from its folder {folder!r}")
    return config


def _tensor(t: mc.ModelInput | mc.ModelOutput, where: str) -> TensorSpec:
    if t.data_type not in DATATYPE_NAMES:
        raise ModelConfigError(f"{where} {t.name!r}: data_type must be set (e.g. TYPE_FP32)")
    if not t.name:
        raise ModelConfigError(f"{where}: every tensor needs a name")
    if any(d == 0 or d < -1 for d in t.dims):
        raise ModelConfigError(
            f"{where} {t.name!r}: dims must be positive or -1, got {list(t.dims)}"
        )
    label = t.label_filename if isinstance(t, mc.ModelOutput) else ""
    return TensorSpec(t.name, DATATYPE_NAMES[t.data_type], tuple(int(d) for d in t.dims), label)


def _device(config: mc.ModelConfig, path: Path) -> tuple[int, bool | None]:
    count, kinds = 0, set()
    for group in config.instance_group or [mc.ModelInstanceGroup(count=1)]:
        if group.count < 0:
            raise ModelConfigError(f"{path}: instance_group count must be >= 1, got {group.count}")
        count += group.count or 1
        kinds.add(group.kind)
    if len(kinds) > 1:
        raise ModelConfigError(f"{path}: mixing instance_group kinds is not supported")
    kind = kinds.pop()
    if kind == mc.ModelInstanceGroup.KIND_MODEL:
        raise ModelConfigError(
            f"{path}: KIND_MODEL is not supported; use KIND_CPU, KIND_GPU or AUTO"
        )
    use_gpu = {mc.ModelInstanceGroup.KIND_GPU: True, mc.ModelInstanceGroup.KIND_CPU: False}
    return count, use_gpu.get(kind)


def settings_from(config: mc.ModelConfig, path: Path) -> ModelSettings:
    """Check a parsed ModelConfig and derive the settings (raises ModelConfigError)."""
    check = f"{path}:"
    if config.platform not in PLATFORMS or config.backend not in BACKENDS:
        raise ModelConfigError(
            f"{check} platform {config.platform!r} / backend {config.backend!r} is not served; "
            f"expected platform {PLATFORMS[0]!r}"
        )
    if config.max_batch_size < 0:
        raise ModelConfigError(f"{check} max_batch_size must be >= 0, got {config.max_batch_size}")
    if not config.input or not config.output:
        raise ModelConfigError(f"{check} needs at least one input and one output")
    inputs = tuple(_tensor(t, f"{check} input") for t in config.input)
    outputs = tuple(_tensor(t, f"{check} output") for t in config.output)
    names = [t.name for t in (*inputs, *outputs)]
    if len(set(names)) != len(names):
        raise ModelConfigError(f"{check} tensor names must be unique, got {names}")
    batching = config.WhichOneof("scheduling_choice") == "dynamic_batching"
    db = config.dynamic_batching
    if batching and config.max_batch_size == 0:
        raise ModelConfigError(f"{check} dynamic_batching needs max_batch_size > 0")
    preferred = tuple(sorted(set(db.preferred_batch_size)))
    bad = [p for p in preferred if not 1 <= p <= config.max_batch_size]
    if bad:
        raise ModelConfigError(
            f"{check} preferred_batch_size {bad} outside 1..max_batch_size "
            f"({config.max_batch_size})"
        )
    if batching and (db.priority_levels or db.priority_queue_policy):
        raise ModelConfigError(f"{check} priority levels are not supported")
    policy = db.default_queue_policy
    if policy.timeout_action == mc.ModelQueuePolicy.DELAY:
        raise ModelConfigError(f"{check} timeout_action DELAY is not supported; use REJECT")
    count, use_gpu = _device(config, path)
    level = config.optimization.graph.level
    return ModelSettings(
        name=config.name,
        max_batch_size=config.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        dynamic_batching=batching,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=int(db.max_queue_delay_microseconds),
        max_queue_size=int(policy.max_queue_size),
        default_timeout_us=int(policy.default_timeout_microseconds),
        allow_timeout_override=bool(policy.allow_timeout_override),
        instance_count=count,
        use_gpu=use_gpu,
        graph_level=max(-1, min(1, level)) if level else 0,
    )


def version_policy_select(config: mc.ModelConfig, available: list[int]) -> list[int]:
    """The versions to serve among `available` (ascending), by the config's version policy."""
    available = sorted(available)
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in available if v in wanted]
    n = policy.latest.num_versions if choice == "latest" else 1
    return available[-max(n, 1) :]


def read_labels(path: Path) -> list[str]:
    """One class name per line, index order; a trailing empty line is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot read labels: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]
