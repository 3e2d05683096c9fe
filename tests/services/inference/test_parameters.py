"""Protocol fidelity (issue 24) and repository control (issue 25), on both protocols.

Parameters follow the Open Inference Protocol: known keys honoured, unknown keys ignored
and counted on the metrics page, only shared memory and sequences refused; KServe's
`binary_data_size` on gRPC and codec hints (`content_type`) are accepted. Load and
unload need `--model-control explicit`. No answer carries the repository's path, and
long names are not echoed whole.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from services.common import ServerOptions
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference.rest_server import HttpOptions
from services.inference.server import InferenceServer, MetricsOptions
from tests.services.inference.conftest import infer_request
from tests.services.inference.onnx_models import add_model

X = np.zeros((1, 1, 8, 8), np.float32)


def start(repo: Path, **kwargs: Any) -> InferenceServer:
    options = ServerOptions(host="127.0.0.1", port=0, grace_period=1)
    http = HttpOptions(host="127.0.0.1", port=0, grace_period=1)
    return InferenceServer(
        repo, options, metrics=MetricsOptions(port=0), http=http, **kwargs
    ).start()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parameters") / "repository"
    add_model(root, "digits")
    (root / "broken").mkdir()
    (root / "broken" / "config.pbtxt").write_text("this is not a config")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[InferenceServer]:
    srv = start(repo, model_control=True)
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def stub(server: InferenceServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def rest(server: InferenceServer, path: str, body: dict[str, Any] | None = None) -> Any:
    assert server.http is not None
    data = None if body is None else json.dumps(body).encode()
    url = f"http://127.0.0.1:{server.http.port}{path}"
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def ignored(server: InferenceServer) -> dict[tuple[str, str], int]:
    assert server.metrics is not None
    url = f"http://127.0.0.1:{server.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as page:
        lines = page.read().decode().splitlines()
    found = {}
    for line in lines:
        if line.startswith("stride_ignored_parameters{"):
            labels, value = line[len("stride_ignored_parameters{") :].split("} ")
            parts = dict(item.split("=") for item in labels.split(","))
            found[(parts["protocol"].strip('"'), parts["where"].strip('"'))] = int(value)
    return found


def test_kserve_and_custom_parameters_are_accepted_and_unknown_ones_counted(
    server: InferenceServer, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    before = ignored(server)
    request = infer_request(X, outputs=("probabilities",))
    # What KServe's InferInput.set_data_from_numpy copies into a gRPC request, and a codec hint.
    request.inputs[0].parameters["binary_data_size"].int64_param = X.nbytes
    request.inputs[0].parameters["content_type"].string_param = "np"
    request.parameters["trace_tag"].string_param = "abc"  # custom: ignored
    request.parameters["priority"].int64_param = 0
    request.outputs[0].parameters["colour"].string_param = "red"  # custom: ignored
    request.outputs[0].parameters["classification"].int64_param = 2
    response = stub.ModelInfer(request, timeout=10)
    assert response.outputs[0].shape == [1, 2]
    body = {
        "parameters": {"trace_tag": "abc"},
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
             "data": X.ravel().tolist(), "parameters": {"content_type": "np", "x-y": 1}},
        ],
    }  # fmt: skip
    status, reply = rest(server, "/v2/models/digits/infer", body)
    assert status == 200, reply
    after = ignored(server)
    grown = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    assert grown == {
        ("grpc", "request"): 1,
        ("grpc", "output"): 1,
        ("http", "request"): 1,
        ("http", "input"): 1,
    }


def test_shared_memory_and_sequences_are_refused_on_both_protocols(
    server: InferenceServer, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    request = infer_request(X)
    request.parameters["sequence_start"].bool_param = True
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sequence batching" in (info.value.details() or "")
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
             "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 256}},
        ],
    }  # fmt: skip
    status, reply = rest(server, "/v2/models/digits/infer", body)
    assert status == 400 and b"shared memory is not offered" in reply


def test_no_answer_carries_the_repository_path(
    server: InferenceServer, stub: pb_grpc.GRPCInferenceServiceStub, repo: Path
) -> None:
    secrets = (str(repo), str(repo.resolve()), str(repo.parent))
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    texts = [info.value.details() or ""]
    status, reply = rest(server, "/v2/repository/models/nope/load", {})
    assert status == 404
    texts.append(reply.decode())
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="broken"), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    texts.append(info.value.details() or "")
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
    reasons = [m.reason for m in index.models if m.name == "broken"]
    assert reasons and "broken/config.pbtxt" in reasons[0]  # relative to the repository
    texts += reasons
    for text in texts:
        assert not any(secret in text for secret in secrets), text


def test_long_names_are_not_echoed_whole(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    for name in ("m" * 100_000, "é/" * 50_000):
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(infer_request(X, model=name), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = info.value.details() or ""
        assert "(100000 characters)" in details and len(details) < 400, details[:500]


def test_repository_control_is_off_unless_enabled(repo: Path) -> None:
    server = start(repo)  # --model-control none, the default
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.RepositoryModelUnload(
                    pb.RepositoryModelUnloadRequest(model_name="digits"), timeout=10
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "--model-control explicit" in (info.value.details() or "")
            assert stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=10).ready
        status, reply = rest(server, "/v2/repository/models/digits/unload", {})
        assert status == 503 and b"--model-control explicit" in reply
        assert rest(server, "/v2/models/digits/ready")[0] == 200
    finally:
        server.stop(0)
