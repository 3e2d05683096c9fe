"""Small ONNX classifiers and model repositories for the inference tests (no torch).

`classifier` builds Flatten -> MatMul -> Add -> (logits, Softmax -> probabilities)
with fixed random weights and Stride's metadata, so a test can compute the
expected outputs with numpy (`expected`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MEAN, STD = 0.5, 0.25


def weights(shape: tuple[int, int, int], classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    w = rng.normal(0, 0.5, (size, classes)).astype(np.float32)
    b = rng.normal(0, 0.1, classes).astype(np.float32)
    return w, b


def expected(x: np.ndarray, seed: int = 0, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) the model of `seed` gives for a float batch (N, C, H, W)."""
    w, b = weights(tuple(x.shape[1:]), classes, seed)
    logits = x.reshape(len(x), -1).astype(np.float64) @ w + b
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits, z / z.sum(axis=1, keepdims=True)


def classifier(
    path: Path,
    shape: tuple[int, int, int] = (1, 8, 8),
    classes: int = 10,
    seed: int = 0,
    metadata: bool = True,
) -> Path:
    """Write a linear softmax classifier with inputs `input` and outputs logits, probabilities."""
    w, b = weights(shape, classes, seed)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *shape])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
        ],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        c, h, wd = shape
        props = {
            "stride.preprocess": json.dumps(
                {"channels": c, "height": h, "width": wd, "mean": [MEAN] * c, "std": [STD] * c}
            ),
            "stride.labels": json.dumps(LABELS[:classes]),
            "stride.run_id": "test-run",
        }
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def config_text(
    name: str,
    shape: tuple[int, int, int] = (1, 8, 8),
    classes: int = 10,
    max_batch: int = 8,
    batching: str | None = "preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 2000",
    policy: str = "latest { num_versions: 1 }",
    extra: str = "",
) -> str:
    dims = ", ".join(str(d) for d in shape)
    text = f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [ {{ name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ {dims} ] }} ]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {classes} ] }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {classes} ] label_filename: "labels.txt" }}
]
version_policy {{ {policy} }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""
    if batching is not None:
        text += f"dynamic_batching {{ {batching} }}\n"
    return text + extra


def add_model(
    repo: Path,
    name: str = "digits",
    versions: tuple[int, ...] = (1,),
    shape: tuple[int, int, int] = (1, 8, 8),
    classes: int = 10,
    **config: object,
) -> Path:
    """Write REPO/name with config.pbtxt, labels.txt and one model per version (seed = version)."""
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config_text(name, shape, classes, **config))  # type: ignore[arg-type]
    (folder / "labels.txt").write_text("\n".join(LABELS[:classes]) + "\n")
    for version in versions:
        classifier(folder / str(version) / "model.onnx", shape, classes, seed=version)
    return folder


def slow_model(
    repo: Path, name: str = "slow", width: int = 1024, depth: int = 60, extra: str = ""
) -> Path:
    """A model whose batch of 64 takes a noticeable time: `depth` identity MatMuls of `width`.

    For drain tests: a request to it is certainly still in flight a moment after it is sent.
    """
    nodes, last = [], "input"
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [last, "W"], [f"h{i}"]))
        last = f"h{i}"
    nodes.append(helper.make_node("Identity", [last], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", width]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", width]),
        ],
        [numpy_helper.from_array(np.eye(width, dtype=np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(
        f"""platform: "onnxruntime_onnx"
max_batch_size: 64
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ {width} ] }} ]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {width} ] }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ {width} ] }}
]
{extra}"""
    )
    return folder
