"""Small model repositories without torch: for the soak, the start-up figures and the fuzzers.

`linear_model` writes a linear softmax classifier (Flatten -> MatMul -> Add ->
logits, Softmax -> probabilities) with Stride's metadata, in the layout of
docs/formats.md; `publish_version` adds a version the way `stride export` does
(built under `.tmp-*`, then renamed), so a polling server never sees half a folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

LABELS = [f"class{i}" for i in range(10)]

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [ {{ name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ {dims} ] }} ]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {classes} ] }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {classes} ] label_filename: "labels.txt" }}
]
{batching}version_policy {{ latest {{ num_versions: 1 }} }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""
BATCHING = (
    "dynamic_batching {{ preferred_batch_size: [ {sizes} ] max_queue_delay_microseconds: 500 }}\n"
)


def onnx_classifier(
    path: Path,
    shape: tuple[int, int, int] = (1, 8, 8),
    classes: int = 10,
    seed: int = 1,
    batch: bool = True,
) -> Path:
    """Write a linear softmax classifier over float32 inputs [batch, *shape] to `path`.

    With `batch=False` the graph has no batch dimension (for max_batch_size 0):
    input `shape`, outputs [classes].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    w = rng.normal(0, 0.5, (size, classes)).astype(np.float32)
    b = rng.normal(0, 0.1, classes).astype(np.float32)
    batch_dims: list[str | int] = ["batch"] if batch else []
    out_dims = [*batch_dims, classes]
    if batch:
        nodes = [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
        ]
    else:  # (C, H, W) -> (1, C*H*W) -> (1, K) -> (K,)
        nodes = [
            helper.make_node("Reshape", ["input", "row"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["sum"]),
            helper.make_node("Reshape", ["sum", "vector"], ["logits"]),
        ]
    axis = 1 if batch else 0
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=axis))
    constants = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "B"),
        numpy_helper.from_array(np.array([1, size], np.int64), "row"),
        numpy_helper.from_array(np.array([classes], np.int64), "vector"),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [*batch_dims, *shape])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_dims),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, out_dims),
        ],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    c, h, wd = shape
    preprocess = {"channels": c, "height": h, "width": wd, "mean": [0.5] * c, "std": [0.25] * c}
    helper.set_model_props(
        model,
        {
            "stride.preprocess": json.dumps(preprocess),
            "stride.labels": json.dumps(LABELS[:classes]),
            "stride.run_id": f"linear-s{seed}",
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def linear_model(
    repo: Path,
    name: str = "digits",
    *,
    shape: tuple[int, int, int] = (1, 8, 8),
    classes: int = 10,
    max_batch: int = 64,
    batching: bool = True,
    version: int = 1,
) -> Path:
    """Write REPO/name (config.pbtxt, labels.txt, version `version`); returns the model folder."""
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(
        CONFIG.format(
            name=name,
            max_batch=max_batch,
            dims=", ".join(str(d) for d in shape),
            classes=classes,
            batching=_batching(max_batch) if batching and max_batch else "",
        )
    )
    (folder / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS[:classes]))
    onnx_classifier(
        folder / str(version) / "model.onnx", shape, classes, seed=version, batch=max_batch > 0
    )
    return folder


def _batching(max_batch: int) -> str:
    sizes = [s for s in (16, 32, 64) if s <= max_batch] or [max_batch]
    return BATCHING.format(sizes=", ".join(str(s) for s in sizes))


def publish_version(folder: Path, version: int, shape: tuple[int, int, int] = (1, 8, 8)) -> Path:
    """Add version `version` to a model folder atomically (build under .tmp-*, then rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    onnx_classifier(tmp / "model.onnx", shape, seed=version)
    target = folder / str(version)
    os.rename(tmp, target)
    return target


def remove_version(folder: Path, version: int) -> None:
    """Delete a version folder (rename it away first, so the server never sees it half gone)."""
    doomed = folder / f".tmp-removing-{version}"
    os.rename(folder / str(version), doomed)
    shutil.rmtree(doomed)
