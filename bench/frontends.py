"""Server models under the same perf_analyzer load: where a request's time goes at concurrency.

Does `stride serve`'s front end, not Python or the model, limit it, and would grpc.aio
with one event loop and a batching task serve more than gRPC's threaded server? This
section answers with six servers of the digits model,
driven one after another by the same perf_analyzer (batch-1 requests of zeros):

- `threaded echo`: gRPC's threaded server, a fixed answer, no model (the floor of
  any threaded Python server; bench/serving.py's ECHO_SERVER);
- `ManagedServer echo`: the same answer behind Stride's own server on grpc.aio (its call
  gate: token check, request ids, admission, counters, error mapping, the ModelInfer
  parser);
- `aio echo`: grpc.aio, one event loop, a fixed answer;
- `aio + batcher`: grpc.aio with a batching task on the loop that runs ONNX Runtime on
  each batch (the server model `stride serve` follows, without Stride's checks);
- `stride serve` itself (grpc.aio; the threaded server it once had is gone).

Each figure comes with the server process's CPU use (cores: CPU seconds over wall
seconds), which says whether a server is held by one core (the GIL) or waits.

    python bench/frontends.py                 # the table, on a fresh digits model
    python bench/frontends.py --serve aio-batch PORT CONFIG ONNX   # one server (internal)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import (  # noqa: E402
    free_port,
    perf_analyzer_unusable,
    perf_run,
    start_stride_serve,
    stop,
    wait_ready,
)

KINDS = ("threaded-echo", "managed-echo", "aio-echo", "aio-batch", "stride")
LABELS = {
    "threaded-echo": "gRPC threaded server, echo",
    "managed-echo": "Stride's ManagedServer, echo",
    "aio-echo": "grpc.aio, echo",
    "aio-batch": "grpc.aio + batching task + ORT",
    "stride": "stride serve (asyncio)",
}
OUTPUTS = ("logits", "probabilities")


def _servicer(config_path: str, asynchronous: bool, infer: Any = None) -> Any:
    """A GRPCInferenceService answering what perf_analyzer asks before its load, and
    ModelInfer with `infer(request)` (awaited when `asynchronous`) or a fixed answer."""
    import numpy as np
    from google.protobuf import text_format

    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
    from services.generated.inference import model_config_pb2 as mc

    config = text_format.Parse(Path(config_path).read_text(), mc.ModelConfig())
    fixed = [np.zeros((1, 10), np.float32).tobytes()] * len(OUTPUTS)

    def metadata(request: Any) -> Any:
        def tensor(name: str, shape: list[int]) -> dict[str, Any]:
            return {"name": name, "datatype": "FP32", "shape": shape}

        dims = [-1, *config.input[0].dims]
        return pb.ModelMetadataResponse(
            name=request.name, versions=["1"], platform="onnxruntime_onnx",
            inputs=[tensor("input", dims)], outputs=[tensor(n, [-1, 10]) for n in OUTPUTS],
        )  # fmt: skip

    def answer(request: Any, outputs: list[bytes]) -> Any:
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1")
        response.id = request.id
        for name, data in zip(OUTPUTS, outputs, strict=True):
            response.outputs.add(name=name, datatype="FP32", shape=[1, 10])
            response.raw_output_contents.append(data)
        return response

    class Sync(pb_grpc.GRPCInferenceServiceServicer):
        def ServerLive(self, r: Any, c: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        def ServerReady(self, r: Any, c: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        def ModelReady(self, r: Any, c: Any) -> Any:
            return pb.ModelReadyResponse(ready=True)

        def ServerMetadata(self, r: Any, c: Any) -> Any:
            return pb.ServerMetadataResponse(name="echo", version="0")

        def ModelMetadata(self, r: Any, c: Any) -> Any:
            return metadata(r)

        def ModelConfig(self, r: Any, c: Any) -> Any:
            return pb.ModelConfigResponse(config=config)

        def ModelStatistics(self, r: Any, c: Any) -> Any:
            return pb.ModelStatisticsResponse()

        def ModelInfer(self, r: Any, c: Any) -> Any:
            return answer(r, fixed)

    if not asynchronous:
        return Sync()

    class Async(Sync):
        async def ModelInfer(self, r: Any, c: Any) -> Any:
            return answer(r, fixed if infer is None else await infer(r))

    return Async()


def _serve_managed(port: int, config: str) -> None:
    from services.common.counters import CallCounters
    from services.common.server import ManagedServer, ServerOptions, Service
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
    from services.inference.wire import parse_infer_request

    servicer = _servicer(config, asynchronous=True)
    service = Service(
        "inference.GRPCInferenceService",
        lambda s: pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, s),
        probes=("ServerLive", "ServerReady", "ModelReady"),
        parsers={"ModelInfer": parse_infer_request},
    )
    options = ServerOptions(host="127.0.0.1", port=port)
    ManagedServer([service], options, counters=CallCounters()).start().wait()


def _serve_threaded(port: int, config: str) -> None:
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

    servicer = _servicer(config, asynchronous=False)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=128))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def _serve_aio(port: int, config: str, onnx: str | None) -> None:
    import asyncio

    import grpc
    import numpy as np
    from grpc_health.v1 import health, health_pb2_grpc

    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

    async def main() -> None:
        infer = None
        if onnx is not None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
            queue: list[tuple[np.ndarray, asyncio.Future[list[bytes]]]] = []
            wake = asyncio.Event()

            async def batches() -> None:
                while True:
                    await wake.wait()
                    wake.clear()
                    while queue:
                        batch = queue[:64]
                        del queue[:64]
                        feeds = {"input": np.concatenate([x for x, _ in batch])}
                        outputs = session.run(None, feeds)
                        for i, (_, done) in enumerate(batch):
                            done.set_result([o[i : i + 1].tobytes() for o in outputs])

            async def infer(request: Any) -> list[bytes]:
                shape = [int(d) for d in request.inputs[0].shape]
                x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(shape)
                done = asyncio.get_running_loop().create_future()
                queue.append((x, done))
                wake.set()
                return await done

            task = asyncio.get_running_loop().create_task(batches())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            _servicer(config, asynchronous=True, infer=infer), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(kind: str, repo: Path, port: int) -> subprocess.Popen[bytes]:
    if kind == "stride":
        return start_stride_serve(repo, port)
    config, onnx = repo / "digits" / "config.pbtxt", repo / "digits" / "1" / "model.onnx"
    return subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port), str(config), str(onnx)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(
    repo: Path,
    concurrency: tuple[int, ...] = (1, 16),
    window_ms: int = 2000,
    kinds: tuple[str, ...] = KINDS,
    retry: bool = False,
) -> dict[str, Any]:
    """Every server kind over the digits model in `repo`, one after another, each at every
    concurrency: perf_analyzer's figures plus the server's CPU use in cores."""
    reason = perf_analyzer_unusable()
    if reason:
        return {"skipped": reason}
    runs: dict[str, Any] = {}
    for kind in kinds:
        port = free_port()
        server = _start(kind, repo, port)
        try:
            wait_ready(port, server)
            for c in concurrency:
                cpu, wall = _cpu_seconds(server.pid), time.perf_counter()
                run = perf_run("digits", port, c, window_ms, retry)
                run["server_cores"] = (_cpu_seconds(server.pid) - cpu) / (
                    time.perf_counter() - wall
                )
                runs[f"{kind}@{c}"] = {"kind": kind, "concurrency": c, **run}
        finally:
            stop(server)
    return {"client": "perf_analyzer (batch 1)", "runs": runs}


def print_table(figures: dict[str, Any]) -> None:
    if "skipped" in figures:
        print(f"skipped: {figures['skipped']}")
        return
    print(f"{'server':<34} {'c':>3} {'infer/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cores':>6}")
    for run in figures["runs"].values():
        print(
            f"{LABELS[run['kind']]:<34} {run['concurrency']:>3} {run['throughput']:>8.0f} "
            f"{run['p50_us'] / 1e3:>7.2f} {run['p99_us'] / 1e3:>7.2f} {run['server_cores']:>6.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", nargs=4, metavar=("KIND", "PORT", "CONFIG", "ONNX"))
    parser.add_argument("--concurrency", default="1,16", help="comma-separated, e.g. 1,16")
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}"
    )
    args = parser.parse_args(argv)
    if args.serve:
        kind, port, config, onnx = args.serve
        if kind == "threaded-echo":
            _serve_threaded(int(port), config)
        elif kind == "managed-echo":
            _serve_managed(int(port), config)
        elif kind in ("aio-echo", "aio-batch"):
            _serve_aio(int(port), config, onnx if kind == "aio-batch" else None)
        else:
            parser.error(f"unknown server kind {kind!r}; known: {', '.join(KINDS[:4])}")
        return 0
    from bench import serving_sweep

    concurrency = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    with tempfile.TemporaryDirectory(prefix="stride-bench-frontends-") as tmp:
        serving_sweep.write_models(Path(tmp), ("digits",))
        kinds = tuple(k for k in args.kinds.split(",") if k.strip())
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            parser.error(f"unknown server kinds {unknown}; known: {', '.join(KINDS)}")
        print_table(measure(Path(tmp), concurrency, args.window_ms, kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
