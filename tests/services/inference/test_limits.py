"""Request limits (issue 15) in-process: answer size, BYTES counts on the wire, images, decodes.

The attacks through a real server are in tests/services/test_resilience_inference.py;
these pin each rule at the layer that applies it.
"""

from __future__ import annotations

import io
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.common.errors import InvalidInput, ResourceExhausted
from services.generated.inference import grpc_service_pb2 as pb
from services.inference import protocol
from services.inference.preprocess import DecodeSlots, Preprocess
from services.inference.repository import ModelRepository
from services.inference.runtime import RuntimeOptions
from services.inference.tensors import (
    InferRequest,
    InputTensor,
    OutputRequest,
    RequestLimits,
    decode_bytes_elements,
)
from services.inference.wire import SCAN_FROM, check_infer_request, parse_infer_request
from tests.services.inference.onnx_models import add_model

X = np.zeros((64, 1, 8, 8), np.float32)


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height), 200).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[ModelRepository]:
    add_model(tmp_path, "digits", max_batch=64)
    repo = ModelRepository(
        tmp_path, RuntimeOptions(intra_op_threads=1), limits=RequestLimits(max_response_bytes=8000)
    )
    repo.poll()
    yield repo
    repo.close()


def request(*outputs: OutputRequest, rows: int = 64) -> InferRequest:
    return InferRequest(
        "digits", "", [InputTensor("input", "FP32", X[:rows].shape, X[:rows])], [*outputs]
    )


def test_an_answer_over_the_limit_is_refused_before_the_model_runs(
    repository: ModelRepository,
) -> None:
    model = repository.get("digits")
    # 64 rows x 10 floats x 2 outputs = 5,120 bytes: within 8,000 with the framing.
    both = request(OutputRequest("logits"), OutputRequest("probabilities"))
    assert len(repository.infer(both).outputs) == 2
    executions = model.stats.snapshot().execution_count
    # 64 rows x 10 classification strings of up to ~70 bytes each: far over.
    ranked = request(OutputRequest("probabilities", classification=10))
    with pytest.raises(ResourceExhausted, match="--max-message-mb"):
        repository.infer(ranked)
    assert model.stats.snapshot().execution_count == executions  # nothing ran
    assert repository.infer(request(OutputRequest("probabilities", 3), rows=8)).outputs


def test_an_output_may_be_named_once(repository: ModelRepository) -> None:
    twice = request(OutputRequest("logits"), OutputRequest("logits"), rows=1)
    with pytest.raises(InvalidInput, match="requested more than once"):
        repository.infer(twice)
    wire = pb.ModelInferRequest(model_name="digits")
    wire.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    wire.raw_input_contents.append(X[:1].tobytes())
    wire.outputs.add(name="probabilities")
    wire.outputs.add(name="probabilities")
    with pytest.raises(InvalidInput, match="requested more than once"):
        protocol.request_from_proto(wire)


def test_bytes_elements_are_counted_before_they_are_split() -> None:
    raw = b"\0\0\0\0" * 1_000_000
    with pytest.raises(InvalidInput, match="more than the 3 elements its shape declares"):
        decode_bytes_elements(raw, "input", expected=3)
    assert decode_bytes_elements(struct.pack("<I", 2) + b"ab", "input", expected=1) == [b"ab"]
    wire = pb.ModelInferRequest(model_name="digits")
    wire.inputs.add(name="input", datatype="BYTES", shape=[5000])
    wire.raw_input_contents.append(raw)
    with pytest.raises(InvalidInput, match="--max-bytes-elements"):
        protocol.request_from_proto(wire, max_bytes_elements=4096)


def test_the_wire_walk_refuses_counts_that_no_request_needs() -> None:
    typed = pb.ModelInferRequest(model_name="digits")
    tensor = typed.inputs.add(name="input", datatype="BYTES", shape=[100_000])
    tensor.contents.bytes_contents.extend([b""] * 100_000)
    with pytest.raises(InvalidInput, match="more than 64 BYTES elements"):
        parse_infer_request(typed.SerializeToString(), max_bytes_elements=64)
    dims = pb.ModelInferRequest(model_name="digits", raw_input_contents=[b"x" * SCAN_FROM])
    dims.inputs.add(name="input", datatype="FP32", shape=[1] * 100)
    with pytest.raises(InvalidInput, match="more than 64 shape dimensions"):
        parse_infer_request(dims.SerializeToString())
    with pytest.raises(InvalidInput, match="not a valid ModelInferRequest"):
        parse_infer_request(b"\x0a\xff\xff\xff\x7f" + b"x" * SCAN_FROM)


def test_the_wire_walk_passes_real_requests_unchanged() -> None:
    images = pb.ModelInferRequest(model_name="digits", id="x")
    tensor = images.inputs.add(name="input", datatype="BYTES", shape=[64])
    tensor.contents.bytes_contents.extend([png(8, 8) * 20] * 64)
    images.outputs.add(name="probabilities").parameters["classification"].int64_param = 3
    floats = pb.ModelInferRequest(model_name="digits")
    floats.inputs.add(name="input", datatype="FP32", shape=[64, 1, 8, 8])
    floats.inputs[0].contents.fp32_contents.extend(X.ravel().tolist())
    raw = pb.ModelInferRequest(model_name="digits", raw_input_contents=[X.tobytes()])
    raw.inputs.add(name="input", datatype="FP32", shape=[64, 1, 8, 8])
    for message in (images, floats, raw):
        data = message.SerializeToString()
        check_infer_request(data, max_bytes_elements=64)  # whatever the size
        assert parse_infer_request(data) == message


def test_images_may_be_at_most_a_factor_larger_than_the_input() -> None:
    pre = Preprocess(channels=1, height=8, width=8, mean=(0.5,), std=(0.25,))
    assert pre.max_pixels(16) == 128 * 128
    assert pre.image_to_array(png(128, 128), max_scale=16).shape == (1, 8, 8)
    with pytest.raises(InvalidInput, match="--max-image-scale"):
        pre.image_to_array(png(129, 128), max_scale=16)
    # Refused from the header alone: this one's pixel data is cut off.
    header_only = png(7999, 7999)[:100]
    with pytest.raises(InvalidInput, match="7999x7999 pixels"):
        pre.image_to_array(header_only, max_scale=16)


def test_decode_slots_bound_the_decodes_in_flight() -> None:
    slots = DecodeSlots(1)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with slots.slot():
            taken.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(5)
    start = time.perf_counter()
    with pytest.raises(ResourceExhausted, match="--max-decodes"), slots.slot(start + 0.2):
        pass
    assert 0.15 < time.perf_counter() - start < 2
    release.set()
    holder.join(5)
    with slots.slot(time.perf_counter() + 1):
        pass
    assert DecodeSlots(0).count >= 1  # one per core


def test_limits_refuse_nonsense() -> None:
    for bad in (
        {"max_response_bytes": 0},
        {"max_bytes_elements": 0},
        {"max_image_scale": 0.5},
        {"max_decodes": -1},
    ):
        with pytest.raises(ValueError):
            RequestLimits(**bad)
