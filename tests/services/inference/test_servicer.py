"""Each RPC of GRPCInferenceService against an in-process server on a free port."""

from __future__ import annotations

import io
import threading
import time
import urllib.request
from typing import TypeAlias

import grpc
import numpy as np
import pytest

from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference.server import InferenceServer
from services.inference.tensors import decode_bytes_elements, encode_bytes_elements
from tests.services.inference.conftest import infer_request, output_array
from tests.services.inference.onnx_models import LABELS, MEAN, STD, expected

Stub: TypeAlias = pb_grpc.GRPCInferenceServiceStub
RNG = np.random.default_rng(4)


def test_liveness_readiness_and_metadata(stub: Stub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="digits")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="digits", version="1")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="digits", version="2")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="other")).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "stride"
    assert {"classification", "model_repository", "statistics", "model_configuration"} <= set(
        meta.extensions
    )


def test_model_metadata_and_config(stub: Stub) -> None:
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"))
    assert meta.versions == ["1"] and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input", "FP32", [-1, 1, 8, 8])
    ]
    assert [(t.name, list(t.shape)) for t in meta.outputs] == [
        ("logits", [-1, 10]),
        ("probabilities", [-1, 10]),
    ]
    config = stub.ModelConfig(pb.ModelConfigRequest(name="digits")).config
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert config.output[1].label_filename == "labels.txt"
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelConfig(pb.ModelConfigRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_infer_raw_contents_gives_logits_and_softmax(stub: Stub) -> None:
    x = RNG.random((3, 1, 8, 8), dtype=np.float32)
    request = infer_request(x)
    request.id = "req-42"
    response = stub.ModelInfer(request)
    logits, probs = expected(x, seed=1)
    assert response.id == "req-42" and response.model_version == "1"
    assert np.allclose(output_array(response, "logits"), logits, atol=1e-4)
    p = output_array(response, "probabilities")
    assert np.allclose(p, probs, atol=1e-5)
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_infer_typed_contents(stub: Stub) -> None:
    x = RNG.random((2, 1, 8, 8), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(
        name="input", datatype="FP32", shape=[2, 1, 8, 8]
    ).contents.fp32_contents.extend(x.ravel().tolist())
    request.outputs.add(name="probabilities")
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["probabilities"]
    assert len(response.raw_output_contents) == 1  # outputs always go back raw
    assert np.allclose(output_array(response, "probabilities"), expected(x, seed=1)[1], atol=1e-5)


def test_classification_returns_k_best_as_strings(stub: Stub) -> None:
    x = RNG.random((2, 1, 8, 8), dtype=np.float32)
    response = stub.ModelInfer(infer_request(x, outputs=("probabilities",), classification=3))
    out = response.outputs[0]
    assert out.datatype == "BYTES" and list(out.shape) == [2, 3]
    items = [i.decode() for i in decode_bytes_elements(response.raw_output_contents[0], "out")]
    probs = expected(x, seed=1)[1]
    for row in range(2):
        best = np.argsort(-probs[row])[:3]
        got = [s.split(":") for s in items[row * 3 : row * 3 + 3]]
        assert [int(g[1]) for g in got] == list(best)
        assert [g[2] for g in got] == [LABELS[i] for i in best]
        values = [float(g[0]) for g in got]
        assert values == sorted(values, reverse=True)
        assert np.allclose(values, probs[row][best], atol=1e-5)


def test_images_as_bytes_are_preprocessed_on_the_server(stub: Stub) -> None:
    from PIL import Image

    pixels = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    png, jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels, "L").save(png, format="PNG")
    Image.fromarray(np.kron(pixels, np.ones((2, 2), np.uint8)), "L").convert("RGB").save(
        jpeg, format="JPEG", quality=95
    )
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(encode_bytes_elements([png.getvalue(), jpeg.getvalue()]))
    request.outputs.add(name="probabilities")
    probs = output_array(stub.ModelInfer(request), "probabilities")
    x = ((pixels.astype(np.float32) / 255.0 - MEAN) / STD)[None, None]
    assert np.allclose(probs[0], expected(x, seed=1)[1][0], atol=1e-5)  # PNG: exact pixels
    assert probs.shape == (2, 10) and np.allclose(probs[1].sum(), 1, atol=1e-5)  # JPEG: resized


def test_concurrent_mixed_batch_sizes_each_get_their_own_rows(
    server: InferenceServer, stub: Stub
) -> None:
    # A model this small finishes before the next request arrives (each would run alone,
    # on the fast path). Hold every runner until all the requests wait in the queue, so
    # that they batch whatever the machine's speed, then check each got its own rows.
    batcher = server.repository.get("digits").batcher
    with batcher._lock:
        held, batcher._free[:] = list(batcher._free), []
    sizes = [1, 3, 2, 5, 1, 4, 2, 3] * 4
    inputs = [RNG.random((n, 1, 8, 8), dtype=np.float32) for n in sizes]
    results: list[np.ndarray | None] = [None] * len(sizes)

    def one(i: int) -> None:
        results[i] = output_array(stub.ModelInfer(infer_request(inputs[i]), timeout=120), "logits")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sizes))]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while batcher.pending < len(sizes) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.pending == len(sizes), "the requests never all reached the queue"
    finally:
        for run in held:
            batcher._release(run, 0)
    for t in threads:
        t.join(120)
    for x, got in zip(inputs, results, strict=True):
        assert got is not None and got.shape == (len(x), 10)
        assert np.allclose(got, expected(x, seed=1)[0], atol=1e-4)
    snap = server.repository.get("digits").stats.snapshot()
    assert snap.inference_count == sum(sizes)
    assert snap.execution_count < len(sizes)  # requests shared executions
    assert max(snap.batches) <= 8


def test_statistics_count_requests_and_executions(stub: Stub) -> None:
    for n in (1, 2, 3):
        stub.ModelInfer(infer_request(np.zeros((n, 1, 8, 8), np.float32)))
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(infer_request(np.zeros((9, 1, 8, 8), np.float32)))
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits")).model_stats
    assert len(stats) == 1
    s = stats[0]
    assert (s.name, s.version, s.inference_count, s.execution_count) == ("digits", "1", 6, 3)
    assert s.inference_stats.success.count == 3 and s.inference_stats.fail.count == 1
    assert s.inference_stats.compute_infer.ns > 0 and s.last_inference > 0
    assert sorted(b.batch_size for b in s.batch_stats) == [1, 2, 3]
    assert len(stub.ModelStatistics(pb.ModelStatisticsRequest()).model_stats) == 1
    for name, version, code in [
        ("nope", "", "NOT_FOUND"),
        ("digits", "9", "NOT_FOUND"),
        ("", "1", "INVALID_ARGUMENT"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelStatistics(pb.ModelStatisticsRequest(name=name, version=version))
        assert info.value.code().name == code


def test_repository_index_unload_and_load(stub: Stub) -> None:
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest())
    assert [(m.name, m.version, m.state) for m in index.models] == [("digits", "1", "READY")]
    unload = pb.RepositoryModelUnloadRequest(model_name="digits")
    unload.parameters["unload_dependents"].bool_param = False  # what tritonclient sends
    stub.RepositoryModelUnload(unload)
    assert not stub.ModelReady(pb.ModelReadyRequest(name="digits")).ready
    assert stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models == []
    stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="digits"))
    assert stub.ModelReady(pb.ModelReadyRequest(name="digits")).ready
    for request, code in [
        (pb.RepositoryModelLoadRequest(model_name="nope"), "NOT_FOUND"),
        (pb.RepositoryModelLoadRequest(model_name="../x"), "INVALID_ARGUMENT"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(request)
        assert info.value.code().name == code
    with_config = pb.RepositoryModelLoadRequest(model_name="digits")
    with_config.parameters["config"].string_param = "{}"
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryModelLoad(with_config)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_stream_infer_answers_each_request(stub: Stub) -> None:
    good = infer_request(np.zeros((1, 1, 8, 8), np.float32))
    bad = infer_request(np.zeros((1, 1, 8, 8), np.float32), model="nope")
    responses = list(stub.ModelStreamInfer(iter([good, bad, good])))
    assert [bool(r.error_message) for r in responses] == [False, True, False]
    assert "unknown model" in responses[1].error_message
    assert responses[0].infer_response.outputs[0].name == "logits"


def test_metrics_use_triton_names(server: InferenceServer, stub: Stub) -> None:
    stub.ModelInfer(infer_request(np.zeros((2, 1, 8, 8), np.float32)))
    assert server.metrics is not None
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics.port}/metrics", timeout=5)
    text = page.read().decode()
    labels = '{model="digits",version="1"}'
    for line in [
        f"nv_inference_request_success{labels} 1",
        f"nv_inference_request_failure{labels} 0",
        f"nv_inference_count{labels} 2",
        f"nv_inference_exec_count{labels} 1",
        f"nv_inference_pending_request_count{labels} 0",
        "# TYPE nv_inference_request_duration_us counter",
        "# TYPE nv_inference_queue_duration_us counter",
        "# TYPE nv_inference_compute_infer_duration_us counter",
    ]:
        assert line in text
    assert "_total" not in text


def test_health_per_model(server: InferenceServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "inference.GRPCInferenceService", "digits"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        server.repository.unload("digits")
        status = health.Check(health_pb2.HealthCheckRequest(service="digits")).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_reflection_lists_the_services(server: InferenceServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]))))
    names = {s.name for s in response.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def test_health_watch_follows_a_model(server: InferenceServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(
            health_pb2.HealthCheckRequest(service="digits"), timeout=20
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        server.repository.unload("digits")
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        server.repository.load("digits")
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
