"""Fixtures: a model repository in tmp_path and an in-process server on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.common import ServerOptions
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference.server import InferenceServer, MetricsOptions
from tests.services.inference.onnx_models import add_model


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    root.mkdir()
    add_model(root, "digits")
    return root


@pytest.fixture
def server(repo: Path) -> Iterator[InferenceServer]:
    options = ServerOptions(host="127.0.0.1", port=0, handler_threads=32, grace_period=2)
    srv = InferenceServer(repo, options, metrics=MetricsOptions(port=0), model_control=True).start()
    yield srv
    srv.stop(0)


@pytest.fixture
def stub(server: InferenceServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer_request(
    x: np.ndarray, model: str = "digits", outputs: tuple[str, ...] = (), **params: int
) -> pb.ModelInferRequest:
    """A ModelInferRequest with `x` as raw FP32 contents of input `input`."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    for name in outputs:
        out = request.outputs.add(name=name)
        for key, value in params.items():
            out.parameters[key].int64_param = value
    return request


def output_array(response: pb.ModelInferResponse, name: str) -> np.ndarray:
    for i, out in enumerate(response.outputs):
        if out.name == name:
            return np.frombuffer(response.raw_output_contents[i], np.float32).reshape(out.shape)
    raise KeyError(name)
