"""Issue 4's bad-input table: every bad request gets the right code and says what was expected."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.common import ServerOptions
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference.server import InferenceServer
from services.inference.tensors import encode_bytes_elements
from tests.services.inference.conftest import infer_request
from tests.services.inference.onnx_models import add_model, classifier

INVALID = grpc.StatusCode.INVALID_ARGUMENT
X = np.full((2, 1, 8, 8), 0.5, np.float32)


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    repo = tmp_path_factory.mktemp("repo")
    add_model(repo, "digits")
    plain = add_model(repo, "plain", versions=())
    classifier(plain / "1" / "model.onnx", metadata=False)
    broken = add_model(repo, "broken", versions=())
    (broken / "1").mkdir()
    (broken / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    server = InferenceServer(repo, ServerOptions(host="127.0.0.1", port=0), metrics=None)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
    server.stop(0)


def _raw(x: np.ndarray, datatype: str = "FP32", **kw: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=str(kw.get("model", "digits")))
    request.model_version = str(kw.get("version", ""))
    request.inputs.add(name=str(kw.get("name", "input")), datatype=datatype, shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request


def _with(
    base: pb.ModelInferRequest, edit: Callable[[pb.ModelInferRequest], object]
) -> pb.ModelInferRequest:
    edit(base)
    return base


def _png(size: int = 4) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (size, size), 128).save(buf, format="PNG")
    return buf.getvalue()


def _images(*images: bytes, model: str = "digits") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="BYTES", shape=[len(images)])
    request.raw_input_contents.append(encode_bytes_elements(list(images)))
    return request


def _outputs(*names: str, k: int = 0) -> Callable[[pb.ModelInferRequest], object]:
    def edit(r: pb.ModelInferRequest) -> None:
        for name in names:
            out = r.outputs.add(name=name)
            if k:
                out.parameters["classification"].int64_param = k

    return edit


def _empty_bytes(count: int, shape: list[int], typed: bool = False) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="BYTES", shape=shape)
    if typed:
        tensor.contents.bytes_contents.extend([b""] * count)
    else:
        request.raw_input_contents.append(b"\0\0\0\0" * count)
    return request


def _typed(values: list[float], shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=shape)
    tensor.contents.fp32_contents.extend(values)
    return request


def _nan() -> np.ndarray:
    x = X.copy()
    x[1, 0, 3, 3] = np.nan
    return x


def _inf() -> np.ndarray:
    x = X.copy()
    x[0, 0, 0, 0] = -np.inf
    return x


def _output_param(key: str, value: int) -> Callable[[pb.ModelInferRequest], object]:
    def edit(r: pb.ModelInferRequest) -> None:
        r.outputs.add(name="probabilities").parameters[key].int64_param = value

    return edit


CASES = [
    (
        "wrong datatype",
        _raw(X.astype(np.float64), "FP64"),
        INVALID,
        "datatype FP64 given, expected FP32",
    ),
    ("wrong shape", _raw(X[:, :, :, :7].copy()), INVALID, "expected [-1, 1, 8, 8]"),
    ("wrong rank", _raw(X.reshape(2, 64)), INVALID, "expected [-1, 1, 8, 8]"),
    (
        "byte size does not match shape",
        _with(_raw(X), lambda r: r.raw_input_contents.__setitem__(0, X[:1].tobytes())),
        INVALID,
        "raw contents are 256 bytes but shape [2, 1, 8, 8] of FP32 needs 512 bytes",
    ),
    ("empty batch", _raw(np.zeros((0, 1, 8, 8), np.float32)), INVALID, "empty batch"),
    (
        "batch over the maximum",
        _raw(np.zeros((9, 1, 8, 8), np.float32)),
        INVALID,
        "exceeds the maximum batch size 8",
    ),
    ("NaN", _raw(_nan()), INVALID, "1 NaN or infinite values; expected finite numbers"),
    ("infinity", _raw(_inf()), INVALID, "NaN or infinite values"),
    (
        "undecodable image",
        _images(b"not an image at all"),
        INVALID,
        "cannot be decoded: expected PNG or JPEG",
    ),
    (
        "truncated BYTES element",
        _with(
            _images(_png()), lambda r: r.raw_input_contents.__setitem__(0, b"\xff\x00\x00\x00ab")
        ),
        INVALID,
        "declares 255 bytes",
    ),
    ("empty image batch", _images(), INVALID, "empty batch"),
    (
        "images for a model without preprocessing",
        _images(_png(), model="plain"),
        INVALID,
        "no stride.preprocess metadata",
    ),
    ("unknown model", _raw(X, model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    (
        "unknown version",
        _raw(X, version="7"),
        grpc.StatusCode.NOT_FOUND,
        "has no version 7 (loaded: 1)",
    ),
    ("malformed version", _raw(X, version="v1"), INVALID, "expected a positive integer"),
    ("model name with a path", _raw(X, model="../digits"), INVALID, "invalid model name"),
    ("model name absolute", _raw(X, model="/etc"), INVALID, "invalid model name"),
    ("unknown input", _raw(X, name="pixels"), INVALID, "unknown: ['pixels']"),
    (
        "unknown output",
        _with(_raw(X), lambda r: r.outputs.add(name="scores")),
        INVALID,
        "unknown output 'scores': model digits has outputs logits, probabilities",
    ),
    (
        "shared memory for an output",
        _with(_raw(X), _output_param("shared_memory_byte_size", 40)),
        INVALID,
        "shared memory is not offered by this server",
    ),
    (
        "shared memory for an input",
        _with(
            _raw(X),
            lambda r: (
                r.inputs[0]
                .parameters["shared_memory_region"]
                .CopyFrom(pb.InferParameter(string_param="region"))
            ),
        ),
        INVALID,
        "input 'input': parameter 'shared_memory_region': shared memory is not offered",
    ),
    (
        "negative classification",
        _with(_raw(X), _output_param("classification", -1)),
        INVALID,
        "non-negative integer",
    ),
    (
        "sequence control",
        _with(
            _raw(X),
            lambda r: r.parameters["sequence_id"].CopyFrom(pb.InferParameter(int64_param=7)),
        ),
        INVALID,
        "no model of this server has sequence batching",
    ),
    ("no inputs", pb.ModelInferRequest(model_name="digits"), INVALID, "request has no inputs"),
    (
        "raw contents count",
        _with(_raw(X), lambda r: r.raw_input_contents.append(b"")),
        INVALID,
        "raw_input_contents has 2 entries but the request has 1 inputs",
    ),
    (
        "typed contents count",
        _typed([0.5] * 10, [1, 1, 8, 8]),
        INVALID,
        "fp32_contents holds 10 elements but shape [1, 1, 8, 8] needs 64",
    ),
    (
        "negative dimension",
        _with(_raw(np.zeros(0, np.float32)), lambda r: r.inputs[0].shape.extend([-1, 64])),
        INVALID,
        "negative dimension",
    ),
    ("unknown datatype", _raw(X, "FLOAT"), INVALID, "unknown datatype 'FLOAT'"),
    # Issue 15: what a request may cost is settled before any work.
    (
        "output named twice",
        _with(_raw(X), _outputs("logits", "probabilities", "logits")),
        INVALID,
        "output 'logits' is requested more than once",
    ),
    (
        "output named 20,000 times (counted on the wire)",
        _with(_raw(X), _outputs(*["probabilities"] * 20_000, k=10)),
        INVALID,
        "the request holds more than 1024 outputs",
    ),
    (
        "BYTES elements declared past the limit",
        _empty_bytes(2000, [2000]),
        INVALID,
        "declares 2000 BYTES elements; at most 1024",
    ),
    (
        "BYTES elements past the shape",
        _empty_bytes(5, [1]),
        INVALID,
        "hold more than the 1 elements its shape declares",
    ),
    (
        "a million typed BYTES elements (counted on the wire)",
        _empty_bytes(1_000_000, [1_000_000], typed=True),
        INVALID,
        "input 0's contents holds more than 1024 BYTES elements",
    ),
    (
        "image larger than 16x the input",
        _images(_png(129)),
        INVALID,
        "images may have at most 16384 pixels (16 times the model's 8x8 input",
    ),
    (
        "model not ready (failed load)",
        _raw(X, model="broken"),
        grpc.StatusCode.UNAVAILABLE,
        "ONNX Runtime cannot load the model",
    ),
]


@pytest.mark.parametrize(
    ("request_", "code", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request(
    stub: pb_grpc.GRPCInferenceServiceStub,
    request_: pb.ModelInferRequest,
    code: grpc.StatusCode,
    text: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_, timeout=10)
    assert info.value.code() == code, info.value.details()
    assert text in info.value.details()


def test_good_request_still_works_after_the_bad_ones(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    response = stub.ModelInfer(infer_request(X), timeout=10)
    assert [o.name for o in response.outputs] == ["logits", "probabilities"]


def test_model_unloaded_is_not_found(tmp_path: Path) -> None:
    # Triton answers NOT_FOUND for a model with no available versions (conformance suite).
    add_model(tmp_path, "digits")
    server = InferenceServer(
        tmp_path, ServerOptions(host="127.0.0.1", port=0), metrics=None, model_control=True
    ).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            s = pb_grpc.GRPCInferenceServiceStub(ch)
            s.RepositoryModelUnload(
                pb.RepositoryModelUnloadRequest(model_name="digits"), timeout=10
            )
            with pytest.raises(grpc.RpcError) as info:
                s.ModelInfer(infer_request(X), timeout=10)
    finally:
        server.stop(0)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "not ready: unloaded" in info.value.details()


def test_unexpected_failure_is_internal_and_the_server_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_model(tmp_path, "digits")
    server = InferenceServer(
        tmp_path, ServerOptions(host="127.0.0.1", port=0), metrics=None
    ).start()
    model = server.repository.get("digits")
    original = model._requested
    monkeypatch.setattr(model, "_requested", lambda request: 1 / 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            s = pb_grpc.GRPCInferenceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as info:
                s.ModelInfer(infer_request(X), timeout=10)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "division" not in info.value.details()
            monkeypatch.setattr(model, "_requested", original)
            assert s.ModelInfer(infer_request(X), timeout=10).outputs
    finally:
        server.stop(0)
