"""ONNX Runtime sessions: providers, threads, optimisation level, metadata, warm-up.

CUDA is used when the config asks for it (KIND_GPU) and must then really be
used: if ONNX Runtime lacks the CUDA provider, or builds the session on the CPU
anyway (it falls back silently when CUDA libraries are missing), the load fails
with a message that says so.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.inference.config import ModelConfigError, ModelSettings

log = logging.getLogger("stride.inference.runtime")

SPIN_MODES = ("off", "run", "on")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# ONNX Runtime's tensor element types by the protocol's datatype names.
ONNX_TYPES = {
    "FP32": "tensor(float)",
    "FP16": "tensor(float16)",
    "FP64": "tensor(double)",
    "INT8": "tensor(int8)",
    "INT16": "tensor(int16)",
    "INT32": "tensor(int32)",
    "INT64": "tensor(int64)",
    "UINT8": "tensor(uint8)",
    "UINT16": "tensor(uint16)",
    "UINT32": "tensor(uint32)",
    "UINT64": "tensor(uint64)",
    "BOOL": "tensor(bool)",
}


@dataclass(frozen=True)
class RuntimeOptions:
    """Server-wide session settings."""

    # 0: one per core for a model with one CPU instance (ONNX Runtime's default), the
    # cores divided among them for a model with several (intra_op_threads_for)
    intra_op_threads: int = 0
    # Whether intra-op workers spin-wait for work: "off" (they sleep), "run" (they spin
    # between the operators of a run and stop at its end) or "on" (they spin between runs
    # too). Spinning between runs holds the cores that the gRPC threads and the clients
    # need, which lengthens the tail at concurrency 1. Sleeping between operators
    # costs a wake-up per operator, which a small model of many operators feels; "run"
    # keeps the cores only while a run needs them: a better median and throughput at
    # concurrency 1 than "off", but a longer tail (figures in docs/performance.md).
    spin: str = "off"
    # Cores these sessions may use, all told; 0: every core this process may run on. A
    # server of several processes (`stride serve --workers N`) gives each its share, which
    # intra_op_threads=0 then divides among a model's instances.
    cores: int = 0

    def __post_init__(self) -> None:
        if self.spin not in SPIN_MODES:
            raise ValueError(f"spin must be one of {', '.join(SPIN_MODES)}, got {self.spin!r}")
        if self.cores < 0:
            raise ValueError(f"cores must be >= 0, got {self.cores}")


def choose_providers(use_gpu: bool | None, available: list[str]) -> list[str]:
    """Providers for a session; raises ModelConfigError when CUDA is required but absent."""
    if use_gpu is True:
        if CUDA not in available:
            raise ModelConfigError(
                "instance_group asks for KIND_GPU but ONNX Runtime here has no "
                f"CUDAExecutionProvider (available: {', '.join(available)}); install "
                "onnxruntime-gpu with CUDA, or set kind: KIND_CPU"
            )
        return [CUDA]
    if use_gpu is None and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def available_cores() -> int:
    """The cores this process may run on (its affinity: a container's cpuset counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cgroup_cpu_quota(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> float | None:
    """The CPU time this process's cgroup may use, in cores (Kubernetes' `limits.cpu`,
    `docker --cpus`), the smallest along its path up to the mount; None without a quota
    (or off Linux). cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`) alike."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # v2: one unified hierarchy
            mounts = [root]
        elif "cpu" in controllers.split(","):
            mounts = [root / "cpu,cpuacct", root / "cpu", root / controllers]
        else:
            continue
        for mount in mounts:
            # The process's own cgroup and its ancestors; a container sees its own cgroup at
            # the mount's root when it has a cgroup namespace, so the root is read too.
            parts = [p for p in path.split("/") if p]
            for depth in range(len(parts), -1, -1):
                quota = _read_quota(mount.joinpath(*parts[:depth]))
                if quota is not None:
                    quotas.append(quota)
    return min(quotas) if quotas else None


def _read_quota(folder: Path) -> float | None:
    try:
        if (folder / "cpu.max").is_file():  # v2: "max 100000" or "200000 100000"
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if (folder / "cpu.cfs_quota_us").is_file():  # v1: -1 when unlimited
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
            return None if int(quota) <= 0 else int(quota) / int(period)
    except (OSError, ValueError):
        return None
    return None


def cpu_limit() -> int:
    """The cores this process may keep busy: its affinity, capped by its cgroup's CPU quota
    (rounded up), at least 1."""
    quota = cgroup_cpu_quota()
    cores = available_cores()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def intra_op_threads_for(
    options: RuntimeOptions, settings: ModelSettings, providers: list[str]
) -> int:
    """Intra-op threads for each session of a model. A model with `count: N` CPU
    instances runs N batches at once; at one thread per core each, N threads would
    share every core, and a thread taken off its core mid-operator stalls its run's
    other threads: under load, one thread per instance serves more than one per core,
    though a lone request takes longer (measured in docs/notes/serving-speed.md). So
    without an explicit --threads the cores are divided among the instances, and a
    server process of several (`options.cores`) divides only its share of them."""
    if options.intra_op_threads or providers != [CPU]:
        return options.intra_op_threads
    if settings.instance_count < 2 and not options.cores:
        return 0  # ONNX Runtime's default: one per core
    return max(1, (options.cores or available_cores()) // settings.instance_count)


def create_session(path: Path, settings: ModelSettings, options: RuntimeOptions) -> Any:
    """Open `path` with ONNX Runtime and check it against the config (raises ModelConfigError)."""
    import onnxruntime as ort

    providers = choose_providers(settings.use_gpu, ort.get_available_providers())
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads_for(options, settings, providers)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }.get(settings.graph_level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.log_severity_level = 3
    so.add_session_config_entry(
        "session.intra_op.allow_spinning", "0" if options.spin == "off" else "1"
    )
    if options.spin == "run":  # ONNX Runtime stops the spinning when each run ends
        so.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for corrupt or invalid files
        raise ModelConfigError(f"{path}: ONNX Runtime cannot load the model: {exc}") from exc
    if settings.use_gpu and session.get_providers()[0] != CUDA:
        raise ModelConfigError(
            f"{path}: KIND_GPU was asked for but ONNX Runtime placed the session on "
            f"{session.get_providers()[0]} (CUDA libraries missing or no device); refusing to "
            "fall back to the CPU silently"
        )
    check_signature(session, settings, path)
    return session


def check_signature(session: Any, settings: ModelSettings, path: Path) -> None:
    """The config's tensors must exist in the graph with the same type and compatible dims."""
    graph = {t.name: t for t in [*session.get_inputs(), *session.get_outputs()]}
    batch = 1 if settings.max_batch_size > 0 else 0
    for spec in (*settings.inputs, *settings.outputs):
        node = graph.get(spec.name)
        if node is None:
            raise ModelConfigError(
                f"{path}: config names tensor {spec.name!r} but the graph has {', '.join(graph)}"
            )
        if ONNX_TYPES.get(spec.datatype) != node.type:
            raise ModelConfigError(
                f"{path}: tensor {spec.name!r} is {node.type} in the graph but "
                f"{spec.datatype} in the config"
            )
        dims = list(node.shape)[batch:]
        if len(dims) != len(spec.dims) or any(
            isinstance(g, int) and c != -1 and g != c for g, c in zip(dims, spec.dims, strict=True)
        ):
            raise ModelConfigError(
                f"{path}: tensor {spec.name!r} has dims {dims} in the graph (after the batch "
                f"dimension) but {list(spec.dims)} in the config"
            )
        if spec in settings.inputs and any(
            isinstance(g, int) and c == -1 for g, c in zip(dims, spec.dims, strict=True)
        ):
            # -1 would let requests of any size through, and ONNX Runtime would fail them.
            raise ModelConfigError(
                f"{path}: input {spec.name!r} has fixed dims {dims} in the graph but "
                f"{list(spec.dims)} in the config: write the graph's size instead of -1"
            )


def binding_run(session: Any) -> Any:
    """`session.run` as `run(output_names, feeds)`, without its Python wrapper on the CPU.

    InferenceSession.run checks the feeds' count and, on a provider failure, falls back
    to the next provider; on the CPU alone there is nothing to fall back to, and the
    batcher's feeds always match the graph (checked at load), so the wrapper is pure
    overhead, a large share of a small model's run (docs/notes/request-costs.md). CUDA
    sessions keep it.
    """
    binding = getattr(session, "_sess", None)
    direct = getattr(binding, "run", None)
    if session.get_providers() != [CPU] or not callable(direct):
        return session.run

    def run(names: list[str], feeds: dict[str, Any]) -> Any:
        return direct(names, feeds, None)

    return run


def metadata(session: Any) -> dict[str, str]:
    """The model's custom metadata (metadata_props)."""
    return dict(session.get_modelmeta().custom_metadata_map)


# Warm-up batches stop at this much input: a config's max_batch_size is not a promise
# that such a batch will ever come (requests are bounded by the message size), and a
# warm-up of 2**31 rows would take the server down before it served anything.
WARM_UP_MAX_BYTES = 64 << 20


def warm_up(session: Any, settings: ModelSettings) -> None:
    """Run zero batches of the sizes the batcher will use, so the first request is not slow."""
    sizes = {1, *settings.preferred_batch_sizes, settings.max_batch_size}
    if settings.max_batch_size == 0:
        sizes = {0}
    row_bytes = 0  # Python ints: config dims may multiply past int64
    for spec in settings.inputs:
        dims = [1 if d == -1 else d for d in spec.dims]
        row_bytes += math.prod(dims) * np.dtype(_numpy_type(spec.datatype)).itemsize
    for size in sorted(sizes):
        if max(size, 1) * row_bytes > WARM_UP_MAX_BYTES:
            break
        feeds = {}
        for spec in settings.inputs:
            dims = [1 if d == -1 else d for d in spec.dims]
            shape = [size, *dims] if size else dims
            feeds[spec.name] = np.zeros(shape, dtype=np.dtype(_numpy_type(spec.datatype)))
        try:
            session.run(None, feeds)
        except Exception as exc:  # ORT's own types: the model cannot run what the config says
            raise ModelConfigError(
                f"warm-up batch of {size} failed in ONNX Runtime: {exc}"
            ) from exc


def _numpy_type(datatype: str) -> str:
    from services.inference.tensors import NUMPY_DTYPES

    return NUMPY_DTYPES[datatype].str
