"""A closed-loop gRPC load generator for KServe v2 servers, in Python (asyncio).

perf_analyzer asks every server for Triton's ModelConfig, which KServe's Python
server does not implement; so the peer comparison drives both servers with this
one instead: `concurrency` requests always in flight, batch-1 FP32 requests sent
as raw contents, a warm-up, then a timed window. Both servers see the same
client, so the ratio holds even though a Python client is slower than
perf_analyzer (its absolute numbers are lower than perf_analyzer's).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np


def _request(model: str, shape: tuple[int, ...]) -> Any:
    from services.generated.inference import grpc_service_pb2 as pb

    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request


async def _drive(
    port: int, model: str, shape: tuple[int, ...], concurrency: int, warmup: float, seconds: float
) -> dict[str, Any]:
    import grpc

    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

    request = _request(model, shape)
    latencies: list[float] = []
    errors: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        start = time.perf_counter()
        measure_from, measure_to = start + warmup, start + warmup + seconds

        async def worker() -> None:
            while True:
                sent = time.perf_counter()
                if sent >= measure_to:
                    return
                try:
                    await stub.ModelInfer(request, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    errors.append(f"{exc.code().name}: {exc.details()}")
                    continue
                if sent >= measure_from:
                    latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if not latencies:
        raise RuntimeError(f"no request succeeded: {errors[:3]}")
    lat = np.asarray(latencies) * 1e6
    return {
        "throughput": len(latencies) / seconds,
        "p50_us": float(np.percentile(lat, 50)),
        "p99_us": float(np.percentile(lat, 99)),
        "errors": len(errors),
    }


def drive(
    port: int,
    model: str,
    shape: tuple[int, ...],
    concurrency: int,
    *,
    warmup: float = 1.0,
    seconds: float = 5.0,
) -> dict[str, Any]:
    """Requests/s and p50/p99 latency (us) of batch-1 requests at `concurrency` in flight."""
    return asyncio.run(_drive(port, model, shape, concurrency, warmup, seconds))
