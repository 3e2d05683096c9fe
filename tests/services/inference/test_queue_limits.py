"""Queue limits through the server: a full queue is RESOURCE_EXHAUSTED, a queued request past
its timeout is DEADLINE_EXCEEDED, and the requests that were accepted still succeed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.common import ServerOptions
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference.server import InferenceServer
from tests.services.inference.onnx_models import slow_model


def slow_request(rows: int, timeout_us: int = 0) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="input", datatype="FP32", shape=[rows, 1024])
    request.raw_input_contents.append(np.ones((rows, 1024), np.float32).tobytes())
    request.outputs.add(name="logits")
    if timeout_us:
        request.parameters["timeout"].int64_param = timeout_us
    return request


def wait_until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


@pytest.mark.slow
def test_full_queue_and_queue_timeout(tmp_path: Path) -> None:
    slow_model(
        tmp_path, depth=200, extra="dynamic_batching { default_queue_policy { max_queue_size: 2 } }"
    )
    server = InferenceServer(
        tmp_path, ServerOptions(host="127.0.0.1", port=0), metrics=None
    ).start()
    batcher = server.repository.get("slow").batcher
    outcomes: list[object] = []

    def send(request: pb.ModelInferRequest) -> None:
        try:
            outcomes.append(stub.ModelInfer(request, timeout=120).model_name)
        except grpc.RpcError as exc:
            outcomes.append(exc.code())

    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            busy = threading.Thread(target=send, args=(slow_request(64),))
            busy.start()
            wait_until(lambda: batcher.pending == 1)  # executing; the queue is empty
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(slow_request(1, timeout_us=20_000), timeout=60)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "timed out after" in info.value.details()
            queued = [threading.Thread(target=send, args=(slow_request(1),)) for _ in range(2)]
            for thread in queued:
                thread.start()
            wait_until(lambda: batcher.pending == 3)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(slow_request(1), timeout=60)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue of model slow:1 is full (2 requests waiting)" in info.value.details()
            for thread in [busy, *queued]:
                thread.join(120)
    finally:
        server.stop(0)
    assert outcomes == ["slow", "slow", "slow"]
