"""Export a trained run to ONNX into a Triton-style model repository.

The graph is exported in eval mode with a dynamic batch axis and two outputs,
`logits` and `probabilities` (softmax). Preprocessing and provenance go into the
ONNX metadata. Before a version is published the graph passes the ONNX checker
and ONNX Runtime must agree with PyTorch on two batch sizes; a model that fails
is not published. Publishing is atomic: the version folder is built under a
temporary name inside the model folder and renamed into place.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import parse_config
from pipeline.model import build_model
from runstore import RunDir, StoreLocation, check_name
from runstore.files import atomic_write_bytes

log = logging.getLogger(__name__)
TOLERANCE = 1e-4  # max abs difference of probabilities, ONNX Runtime vs PyTorch
PARITY_BATCHES = (3, 17)
# config.pbtxt instance_group kinds: cpu, gpu (CUDA or the load fails), auto (CUDA when present)
INSTANCE_KINDS = {
    "cpu": "KIND_CPU",
    "gpu": "KIND_GPU",
    "auto": "KIND_AUTO",
}  # two different sizes exercise the dynamic batch axis


class ExportError(ValueError):
    """The model cannot be exported or failed its checks; nothing was published."""


@dataclass(frozen=True)
class ExportResult:
    model_dir: Path
    version: int
    path: Path  # .../<version>/model.onnx
    max_abs_diff: float


class WithProbabilities(nn.Module):
    """(N, C, H, W) -> (logits (N, K), softmax probabilities (N, K))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


def export_run(
    run_dir: str | Path | StoreLocation | RunDir,
    repository: str | Path,
    *,
    name: str | None = None,
    max_batch_size: int = 64,
    instance_kind: str = "cpu",
) -> ExportResult:
    """Export a completed run's final weights as a new version of model `name`."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.exists():
        raise ExportError(f"{run} is not a run directory (no config.json)")
    summary = run.read_summary()
    if summary is None or summary.status != "completed":
        status = "running or interrupted" if summary is None else summary.status
        raise ExportError(f"run {run.name} is {status}; only a completed run can be exported")
    weights = run.read_checkpoint_file("model.pt")
    if weights is None:
        raise ExportError(f"{run}/checkpoints/model.pt is missing: the run saved no final model")
    record = run.read_config()
    cfg = parse_config(dict(record.config))
    data = record.data
    try:
        c, h, w = (int(v) for v in data["input_shape"])
        input_shape = (c, h, w)
        labels = [str(v) for v in data["class_names"]]
        mean, std = list(data["mean"]), list(data["std"])
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{run}/config.json has no usable 'data' record") from None
    model = build_model(cfg.model, input_shape=input_shape, num_classes=len(labels))
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    provenance = {
        "run_id": record.run_id or run.name,
        "experiment": record.experiment or run.experiment,
        "config_hash": record.config_hash or cfg.hash(),
        "code_version": record.code_version,
    }
    return export_model(
        model,
        repository=repository,
        name=name or cfg.model.name,
        input_shape=input_shape,
        labels=labels,
        mean=mean,
        std=std,
        provenance=provenance,
        max_batch_size=max_batch_size,
        instance_kind=instance_kind,
    )


def export_model(
    model: nn.Module,
    *,
    repository: str | Path,
    name: str,
    input_shape: tuple[int, int, int],
    labels: list[str],
    mean: list[float],
    std: list[float],
    provenance: dict[str, str],
    max_batch_size: int = 64,
    instance_kind: str = "cpu",
) -> ExportResult:
    """Export, check, compare with PyTorch, and publish a new version atomically."""
    check_name("model name", name)
    if instance_kind not in INSTANCE_KINDS:
        raise ExportError(
            f"instance kind {instance_kind!r} is not allowed; allowed: {', '.join(INSTANCE_KINDS)}"
        )
    if max_batch_size < 1:
        raise ExportError(f"max batch size must be >= 1, got {max_batch_size}")
    model_dir = Path(repository) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    config_text = config_pbtxt(name, input_shape, len(labels), max_batch_size, instance_kind)
    _check_compatible(model_dir, config_text, labels)
    tmp = model_dir / f".tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        onnx_path = tmp / "model.onnx"
        wrapper = WithProbabilities(model).eval()
        _to_onnx(wrapper, onnx_path, input_shape)
        _add_metadata(
            onnx_path,
            {
                "stride.preprocess": json.dumps(
                    {
                        "channels": input_shape[0],
                        "height": input_shape[1],
                        "width": input_shape[2],
                        "mean": mean,
                        "std": std,
                        "scale": 255.0,
                    }
                ),
                "stride.labels": json.dumps(labels),
                **{f"stride.{k}": v for k, v in provenance.items()},
            },
        )
        diff = check_parity(wrapper, onnx_path, input_shape)
        if not (model_dir / "config.pbtxt").exists():  # keep a config the user tuned
            atomic_write_bytes(model_dir / "config.pbtxt", config_text.encode())
        labels_text = "".join(f"{label}\n" for label in labels)
        atomic_write_bytes(model_dir / "labels.txt", labels_text.encode())
        version = _publish(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(model_dir, version, model_dir / str(version) / "model.onnx", diff)


def _to_onnx(wrapper: nn.Module, path: Path, input_shape: tuple[int, int, int]) -> None:
    example = torch.randn(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits", "probabilities"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc


def _add_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(str(path))
    for key, value in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails the ONNX checker: {exc}") from None
    onnx.save(graph, str(path))


def check_parity(wrapper: nn.Module, path: Path, input_shape: tuple[int, int, int]) -> float:
    """Max abs difference of probabilities between ONNX Runtime and PyTorch over two
    batch sizes; raises ExportError above TOLERANCE or when probabilities do not sum to 1."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in PARITY_BATCHES:
        x = torch.randn((n, *input_shape), generator=g)
        with torch.no_grad():
            want = wrapper(x)[1].numpy()
        logits, probs = session.run(["logits", "probabilities"], {"input": x.numpy()})
        if probs.shape != want.shape or logits.shape[0] != n:
            raise ExportError(
                f"ONNX output shape {probs.shape} differs from PyTorch's {want.shape}"
            )
        worst = max(worst, float(np.abs(probs - want).max()))
        sums = probs.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-5):
            raise ExportError(
                f"ONNX probabilities do not sum to 1 (got {sums.min()}..{sums.max()})"
            )
    if not worst <= TOLERANCE:
        raise ExportError(
            f"ONNX Runtime and PyTorch differ by {worst:.2e} on probabilities "
            f"(allowed {TOLERANCE:.0e}); not published"
        )
    return worst


def config_pbtxt(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    max_batch_size: int,
    instance_kind: str = "cpu",
) -> str:
    """Triton's model configuration (protobuf text) for an exported classifier."""
    dims = ", ".join(str(d) for d in input_shape)
    preferred = ", ".join(str(b) for b in (8, 16, 32, 64) if b <= max_batch_size) or "1"
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
  {{ name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ {dims} ] }}
]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {num_classes} ] }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {num_classes} ]
    label_filename: "labels.txt" }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: 500
}}
version_policy {{ latest {{ num_versions: 1 }} }}
instance_group [ {{ kind: {INSTANCE_KINDS[instance_kind]} count: 1 }} ]
"""


def _check_compatible(model_dir: Path, config_text: str, labels: list[str]) -> None:
    """A new version must have the inputs, outputs and classes of the model's config."""
    existing = model_dir / "config.pbtxt"
    if not existing.exists():
        return
    current = existing.read_text()
    for line in config_text.splitlines():
        if "dims:" in line and line.strip() not in current:
            raise ExportError(
                f"{existing} declares other shapes than this run ({line.strip()}); "
                "export under another --name"
            )
    label_file = model_dir / "labels.txt"
    if label_file.exists() and label_file.read_text().splitlines() != labels:
        raise ExportError(
            f"{label_file} lists other classes than this run; export under another --name"
        )


def _publish(tmp: Path, model_dir: Path) -> int:
    """Rename the finished folder to the next free version number."""
    for _ in range(100):
        versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
        version = max(versions, default=0) + 1
        try:
            tmp.rename(model_dir / str(version))  # fails if another export took the number
            return version
        except OSError:
            continue
    raise ExportError(f"could not find a free version number in {model_dir}")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The stride.* metadata of an exported model (JSON values decoded)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in graph.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out
