"""Differential conformance: real NVIDIA Triton and `stride serve` on the same repository,
asked the same things by tritonclient over gRPC and HTTP/REST.

Triton comes from the `nvidia-pytriton` wheel in .venv-pytriton (`make triton-server`),
serving the same model.onnx files through its Python backend (bench/triton_peer.py
converts the repository). Each server starts once for the module, and one
subprocess (.venv-pytriton's Python, so tritonclient's protos stay out of this
process) sends every request to both; the tests diff what it wrote down. Where
Stride answers differently on purpose, the test says so and docs/serving.md says why.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import triton_peer
from services.common import ServerOptions
from services.inference.rest_server import HttpOptions
from services.inference.server import InferenceServer
from tests.services.inference.onnx_models import LABELS, add_model, config_text, expected

CLIENT = Path(__file__).with_name("triton_diff_client.py")

pytestmark = pytest.mark.skipif(
    triton_peer.unusable() is not None, reason=str(triton_peer.unusable())
)


def _ties_model(repo: Path) -> None:
    """A classifier whose probabilities are all equal: classification must break ties."""
    folder = repo / "ties"
    (folder / "1").mkdir(parents=True)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "ties",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
        ],
        [numpy_helper.from_array(np.zeros((64, 10), np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(config_text("ties"))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both servers' answers to the same requests: {"stride": ..., "triton": ...}."""
    root = tmp_path_factory.mktemp("conformance")
    repo = root / "repository"
    add_model(repo, "digits")
    add_model(repo, "spare")
    _ties_model(repo)
    add_model(repo, "versioned", versions=(1, 2, 3), policy="latest { num_versions: 2 }")
    triton_peer.triton_repository(repo, root / "triton", threads=1)
    triton = triton_peer.start(root / "triton", log=root / "triton.log", explicit=True)
    options = ServerOptions(host="127.0.0.1", port=0, grace_period=1)
    stride = InferenceServer(  # Triton runs in explicit model control: so does Stride
        repo,
        options,
        metrics=None,
        http=HttpOptions(host="127.0.0.1", port=0, grace_period=1),
        model_control=True,
    )
    try:
        stride.start()
        assert stride.http is not None
        clients = {
            name: subprocess.Popen(
                [
                    str(triton_peer.PYTRITON_PYTHON),
                    str(CLIENT),
                    f"127.0.0.1:{grpc_port}",
                    f"127.0.0.1:{http_port}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, grpc_port, http_port in (
                ("stride", stride.port, stride.http.port),
                ("triton", triton.grpc_port, triton.http_port),
            )
        }
        answers = {}
        for name, client in clients.items():
            out, err = client.communicate(timeout=300)
            assert client.returncode == 0, f"{name}: {err[-3000:]}"
            answers[name] = json.loads(out)
        yield answers
    finally:
        stride.stop(0)
        triton.stop()


PROTOCOLS = ("grpc", "http")

# Where Stride answers with another status than Triton 2.51 on purpose:
# (section, case) -> (Stride's, Triton's). docs/serving.md ("Differences from Triton") says why.
DIFFERENT_STATUS = {
    ("bad_grpc", "extra_raw"): ("INVALID_ARGUMENT", "OK"),
    ("bad_http", "data_count"): (400, 500),
    ("bad_http", "not_json"): (400, 500),
    ("bad_http", "index_bad_ready"): (400, 500),
    ("bad_http", "load_unknown"): (404, 500),
    ("bad_http", "unload_unknown"): (404, 200),
    ("bad_http", "stats_unknown"): (404, 400),
    ("grpc", "load_unknown_model"): ("StatusCode.NOT_FOUND", "StatusCode.INTERNAL"),
    ("grpc", "stats_unknown_model"): ("StatusCode.NOT_FOUND", "StatusCode.INVALID_ARGUMENT"),
    ("http", "load_unknown_model"): ("404", "500"),
    ("http", "stats_unknown_model"): ("404", "400"),
}
# Health answers over HTTP: the bodies of the protocol's REST text (KServe's client reads
# them), where Triton answers with an empty body (tritonclient reads the status only).
HEALTH_BODIES = {
    "health_live": {"live": True},
    "health_ready": {"ready": True},
    "model_ready": {"name": "digits", "ready": True},
}
# ModelConfig fields Triton fills in or that the conversion to its Python backend changes.
CONFIG_DIFFERENCES = {
    "platform",
    "backend",
    "default_model_filename",
    "optimization",
    "name@instance_group",
}


def _both(seen: dict[str, Any], *path: str) -> tuple[Any, Any]:
    ours, theirs = seen["stride"], seen["triton"]
    for key in path:
        ours, theirs = ours[key], theirs[key]
    return ours, theirs


def _shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not values or list lengths."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return (
        "number"
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else type(value).__name__
    )


def _numbers(value: Any) -> Any:
    """int64 fields as numbers (protobuf's JSON writes them as strings)."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def _config_diffs(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Fields defined by both configs whose values differ (outside CONFIG_DIFFERENCES)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) & set(theirs)):
            if (
                key in CONFIG_DIFFERENCES
                or f"{key}@{where.rsplit('.', 1)[-1]}" in CONFIG_DIFFERENCES
            ):
                continue
            out += _config_diffs(ours[key], theirs[key], f"{where}.{key}" if where else key)
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for a, b in zip(ours, theirs, strict=True) for d in _config_diffs(a, b, where)]
    return [] if ours == theirs else [f"{where}: {ours!r} != {theirs!r}"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_readiness_and_index_agree(seen: dict[str, Any], protocol: str) -> None:
    for key in ("live", "ready", "ready_models", "index", "spare_ready_after_unload",
                "spare_ready_after_load"):  # fmt: skip
        ours, theirs = _both(seen, protocol, key)
        assert ours == theirs, key
    assert seen["stride"][protocol]["ready_models"] == {
        "digits": True, "digits/1": True, "digits/3": False, "nope": False
    }  # fmt: skip


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_and_model_metadata_agree(seen: dict[str, Any], protocol: str) -> None:
    ours, theirs = _both(seen, protocol, "server_metadata")
    assert ours["name"] == "stride" and theirs["name"] == "triton"
    assert set(ours["extensions"]) <= set(theirs["extensions"])
    for key in ("model_metadata", "model_metadata_v1"):
        ours, theirs = _both(seen, protocol, key)
        # The platform is the conversion's: Triton reports its Python backend.
        assert ours.pop("platform") == "onnxruntime_onnx" and theirs.pop("platform") == "python"
        assert ours == theirs


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_config_agrees_field_by_field(seen: dict[str, Any], protocol: str) -> None:
    ours, theirs = _both(seen, protocol, "model_config")
    ours, theirs = ours["config"], theirs["config"]
    assert _config_diffs(ours, theirs) == []
    shared = set(ours) & set(theirs)
    assert {"name", "max_batch_size", "input", "output", "dynamic_batching"} <= shared


def test_model_config_is_the_same_over_both_protocols(seen: dict[str, Any]) -> None:
    grpc_config = seen["stride"]["grpc"]["model_config"]["config"]
    http_config = seen["stride"]["http"]["model_config"]["config"]
    # gRPC's JSON leaves out fields at their defaults and writes 64-bit integers as strings;
    # REST writes every field and numbers, as Triton's does.
    assert _config_diffs(_numbers(grpc_config), http_config) == []
    assert set(grpc_config) <= set(http_config)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_statistics_have_the_same_shape(seen: dict[str, Any], protocol: str) -> None:
    ours, theirs = _both(seen, protocol, "statistics")
    assert _shape(ours) == _shape(theirs)
    ours, theirs = _both(seen, protocol, "statistics_all")
    assert [m["name"] for m in ours["model_stats"]] == [m["name"] for m in theirs["model_stats"]]
    ours, theirs = _both(seen, "bad_http", "stats_version", "body")
    assert _shape(ours) == _shape(theirs)


def _described(answer: dict[str, Any]) -> Any:
    """An infer answer without its values: id, and each output's name, datatype, shape and
    how its data came (JSON or binary, and how many bytes)."""
    outputs = [
        (o["name"], o["datatype"], o["shape"], o.get("parameters"), "data" in o)
        for o in answer.get("outputs", [])
    ]
    return answer.get("id"), answer.get("model_name"), outputs


def _same_tensor(ours: dict[str, Any], theirs: dict[str, Any], what: str) -> None:
    assert (ours["datatype"], ours["shape"]) == (theirs["datatype"], theirs["shape"]), what
    if ours["datatype"] != "BYTES":
        np.testing.assert_allclose(ours["data"], theirs["data"], atol=1e-5, err_msg=what)
        return
    for row_ours, row_theirs in zip(ours["data"], theirs["data"], strict=True):
        for a, b in zip(row_ours, row_theirs, strict=True):  # "score:index[:label]"
            score_a, rest_a = a.split(":", 1)
            score_b, rest_b = b.split(":", 1)
            assert rest_a == rest_b and abs(float(score_a) - float(score_b)) < 1e-5, what


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_answers_agree(seen: dict[str, Any], protocol: str) -> None:
    ours_all, theirs_all = _both(seen, protocol, "infer")
    assert set(ours_all) == set(theirs_all)
    for case, ours in ours_all.items():
        theirs = theirs_all[case]
        assert ours["id"] == theirs["id"], case
        assert list(ours["outputs"]) == list(theirs["outputs"]), case
        for name in ours["outputs"]:
            _same_tensor(ours["outputs"][name], theirs["outputs"][name], f"{case}/{name}")
    x = np.linspace(-1, 1, 3 * 64, dtype=np.float32).reshape(3, 1, 8, 8)
    logits, probs = expected(x, seed=1)
    outputs = ours_all["all"]["outputs"]
    np.testing.assert_allclose(outputs["logits"]["data"], logits, atol=1e-4)
    np.testing.assert_allclose(outputs["probabilities"]["data"], probs, atol=1e-5)
    assert ours_all["all"]["id"] == "diff-1"
    top = ours_all["top20"]["outputs"]["probabilities"]
    assert top["shape"] == [3, 10]  # class_count past the classes: every class, best first
    assert ours_all["ties"]["outputs"]["probabilities"]["data"] == [
        ["0.100000:0:zero", "0.100000:1:one", "0.100000:2:two", "0.100000:3:three"]
    ]
    # "logits" names no label file: "score:index", as Triton (labels.txt is not used)
    rows = ours_all["logits_top2"]["outputs"]["logits"]["data"]
    assert all(item.count(":") == 1 for row in rows for item in row)


@pytest.mark.parametrize("section", ["bad_grpc", "bad_http", "grpc", "http"])
def test_bad_requests_get_the_same_status(seen: dict[str, Any], section: str) -> None:
    ours_all, theirs_all = seen["stride"][section], seen["triton"][section]
    if section in PROTOCOLS:
        ours_all, theirs_all = ours_all["errors"], theirs_all["errors"]
    assert set(ours_all) == set(theirs_all)
    mismatched = {}
    for case, ours in ours_all.items():
        pair = (ours["status"], theirs_all[case]["status"])
        expected_pair = DIFFERENT_STATUS.get((section, case), (pair[1], pair[1]))
        if pair != expected_pair:
            mismatched[case] = pair
    assert mismatched == {}, f"(stride, triton) status per case: {mismatched}"
    for case, ours in ours_all.items():  # what both answered: the same outputs
        theirs = theirs_all[case]
        if ours["status"] == "OK" and theirs["status"] == "OK":
            assert ours["outputs"] == theirs["outputs"], case
        if case in HEALTH_BODIES:  # the protocol's bodies, where Triton's are empty
            assert (ours["body"], theirs["body"]) == (HEALTH_BODIES[case], None), case
        elif ours["status"] == 200 and theirs["status"] == 200 and isinstance(ours["body"], dict):
            assert _described(ours["body"]) == _described(theirs["body"]), case
            assert ours.get("binary_bytes") == theirs.get("binary_bytes"), case
    if section == "bad_grpc":
        assert ours_all["typed_ok"]["status"] == "OK"
        assert ours_all["empty_batch"]["status"] == "INVALID_ARGUMENT"
    if section == "bad_http":
        ok = ours_all["binary_ok"]
        assert ok["status"] == 200 and ok["binary_bytes"] == 40
        assert ok["body"] == theirs_all["binary_ok"]["body"]
        assert ours_all["classification"]["body"]["id"] == "r1"


def test_stream_answers_agree(seen: dict[str, Any]) -> None:
    """ModelStreamInfer: the same answers, an error where Triton answers one (the stream
    stays open after it), the same outputs otherwise."""
    ours_all, theirs_all = seen["stride"]["stream"], seen["triton"]["stream"]
    assert set(ours_all) == set(theirs_all)
    for case, ours in ours_all.items():
        theirs = theirs_all[case]
        assert ("error" in ours) == ("error" in theirs), (case, ours, theirs)
        if "error" in ours:
            continue
        assert ours["id"] == theirs["id"], case
        assert list(ours["outputs"]) == list(theirs["outputs"]), case
        for name in ours["outputs"]:
            _same_tensor(ours["outputs"][name], theirs["outputs"][name], f"{case}/{name}")
    assert [c for c, a in ours_all.items() if "error" in a] == [
        "unknown_model", "unknown_output", "batch_over_max", "unknown_version", "versioned_1"
    ]  # fmt: skip
    assert ours_all["after_errors"]["id"] == "s3"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_versions_agree(seen: dict[str, Any], protocol: str) -> None:
    """Three versions on disk, the latest two served: metadata, readiness, the version
    each request reaches, and the error for the one not served."""
    ours, theirs = _both(seen, f"versions_{protocol}")
    assert set(ours) == set(theirs)
    assert ours["ready"] == theirs["ready"] == {"": True, "1": False, "2": True, "3": True}
    assert ours["metadata_1"]["status"] == theirs["metadata_1"]["status"] != "OK"
    assert ours["infer_1"]["status"] == theirs["infer_1"]["status"] != "OK"
    ours_meta, theirs_meta = dict(ours["metadata"]), dict(theirs["metadata"])
    assert ours_meta.pop("platform") == "onnxruntime_onnx"
    theirs_meta.pop("platform")
    assert ours_meta == theirs_meta
    for key in ("infer_latest", "infer_2", "infer_3"):
        assert ours[key]["model_version"] == theirs[key]["model_version"], key
        for name in ours[key]["outputs"]:
            _same_tensor(ours[key]["outputs"][name], theirs[key]["outputs"][name], key)
    assert ours["infer_latest"]["model_version"] == "3"
    # Each version is its own model (seed = version): 2 and 3 answer differently.
    assert ours["infer_2"]["outputs"] != ours["infer_3"]["outputs"]
