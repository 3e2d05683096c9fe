"""Serving benchmark: `stride serve` under perf_analyzer against in-process ONNX Runtime.

`measure()` returns a dict of figures; `python bench/serving.py` prints them as a table.

1. Reference CNN (3x32x32, stages 64/128/256, 10 classes) on the CPU:
   - in-process ONNX Runtime throughput at each batch size; the best is the baseline;
   - perf_analyzer (batch-1 requests) at concurrency 1, 4, 16, 64 against `stride serve`:
     throughput relative to the baseline (goal >= 0.9 at concurrency 16);
   - p50 / p99 latency at concurrency 1 minus the in-process batch-1 compute time
     (goal < 1 ms).
2. A small digits model (1x8x8 -> 10) where gRPC overhead dominates: requests/s of
   `stride serve` against a minimal gRPC server that speaks the same protocol and
   answers ModelInfer with a canned response, both driven by perf_analyzer.

Needs torch (to build the CNN; later `stride export` will do it) and .venv-triton
(`make triton-client`) for perf_analyzer. Server and load generator share this
machine's cores, as they would on a single serving node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import (  # noqa: E402
    PERF_ANALYZER,
    free_port,
    perf_run,
    start_stride_serve,
    stop,
    wait_ready,
)

CONCURRENCY = (1, 4, 16, 64)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 64
input [ {{ name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ {dims} ] }} ]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ 10 ] }},
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" }}
]
dynamic_batching {{ preferred_batch_size: [ 16, 32, 64 ] max_queue_delay_microseconds: 2000 }}
version_policy {{ latest {{ num_versions: 1 }} }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def _reference_cnn() -> Any:
    import torch
    from torch import nn

    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.MaxPool2d(2),
        ]  # fmt: skip

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*stage(3, 64), *stage(64, 128), *stage(128, 256))
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25), nn.Linear(256, 10)
            )

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.head(self.features(x))  # (N, 10)
            return logits, torch.softmax(logits, dim=1)

    torch.manual_seed(0)
    return Net().eval()


def _digits_model() -> Any:
    import torch
    from torch import nn

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.fc(x.flatten(1))
            return logits, torch.softmax(logits, dim=1)

    torch.manual_seed(0)
    return Linear().eval()


def write_model(repo: Path, name: str, model: Any, shape: tuple[int, int, int]) -> Path:
    """Export `model` with torch into REPO/name (the documented repository format)."""
    import onnx
    import torch

    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    path = folder / "1" / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model, (torch.randn(2, *shape),), str(path), input_names=["input"],
        output_names=["logits", "probabilities"], dynamic_shapes=({0: batch},),
        dynamo=True, external_data=False, verbose=False,
    )  # fmt: skip
    proto = onnx.load(str(path))
    c, h, w = shape
    onnx.helper.set_model_props(proto, {
        "stride.preprocess": json.dumps(
            {"channels": c, "height": h, "width": w, "mean": [0.5] * c, "std": [0.25] * c}),
        "stride.labels": json.dumps([str(i) for i in range(10)]),
        "stride.run_id": "bench",
    })  # fmt: skip
    onnx.save(proto, str(path))
    (folder / "config.pbtxt").write_text(CONFIG.format(name=name, dims=", ".join(map(str, shape))))
    (folder / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    return path


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _rate(session: Any, n: int, shape: tuple[int, int, int], seconds: float) -> float:
    """Images/s of back-to-back runs of batch n."""
    x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
    for _ in range(3):
        session.run(None, {"input": x})
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"input": x})
        count += 1
    return count * n / (time.perf_counter() - start)


def in_process(
    path: Path,
    shape: tuple[int, int, int],
    seconds: float = 1.5,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
) -> dict[str, Any]:
    """ONNX Runtime in this process: images/s per batch size (and the best) and batch-1
    compute latency (us)."""
    session = _session(path)
    rate = {n: _rate(session, n, shape, seconds) for n in batch_sizes}
    x1 = np.zeros((1, *shape), np.float32)
    times = []
    for _ in range(300):
        t = time.perf_counter()
        session.run(None, {"input": x1})
        times.append(time.perf_counter() - t)
    best = max(rate, key=lambda n: rate[n])
    return {
        "rate_by_batch": rate,
        "best_batch": best,
        "best_rate": rate[best],
        "compute_b1_us": float(np.median(times) * 1e6),
    }


def _start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL)
    wait_ready(port, proc)
    return proc


def perf_analyzer(model: str, port: int, concurrency: int) -> dict[str, float]:
    """One perf_analyzer run of 3 s windows (see `bench.servers.perf_run`)."""
    return perf_run(model, port, concurrency, 3000)


ECHO_SERVER = """
import sys
from concurrent import futures
import grpc, numpy as np
from services.generated.inference import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pbg
from services.generated.inference import model_config_pb2 as mc
from google.protobuf import text_format
config = text_format.Parse(open(sys.argv[2]).read(), mc.ModelConfig())
out = np.zeros((1, 10), np.float32).tobytes()
class Echo(pbg.GRPCInferenceServiceServicer):
    def ServerLive(self, r, c): return pb.ServerLiveResponse(live=True)
    def ServerReady(self, r, c): return pb.ServerReadyResponse(ready=True)
    def ModelReady(self, r, c): return pb.ModelReadyResponse(ready=True)
    def ServerMetadata(self, r, c): return pb.ServerMetadataResponse(name="echo", version="0")
    def ModelMetadata(self, r, c):
        t = lambda n, s: {"name": n, "datatype": "FP32", "shape": s}
        return pb.ModelMetadataResponse(name=r.name, versions=["1"], platform="onnxruntime_onnx",
            inputs=[t("input", [-1, 1, 8, 8])],
            outputs=[t("logits", [-1, 10]), t("probabilities", [-1, 10])])
    def ModelConfig(self, r, c): return pb.ModelConfigResponse(config=config)
    def ModelStatistics(self, r, c): return pb.ModelStatisticsResponse()
    def ModelInfer(self, r, c):
        resp = pb.ModelInferResponse(model_name=r.model_name, model_version="1", id=r.id)
        for name in ("logits", "probabilities"):
            resp.outputs.add(name=name, datatype="FP32", shape=[1, 10])
            resp.raw_output_contents.append(out)
        return resp
server = grpc.server(futures.ThreadPoolExecutor(max_workers=128))
pbg.add_GRPCInferenceServiceServicer_to_server(Echo(), server)
from grpc_health.v1 import health, health_pb2_grpc
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""


def _compute_stats(port: int, model: str) -> tuple[int, int, int]:
    """(executions, inferences, compute_infer ns) so far, from the server's ModelStatistics."""
    import grpc

    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        s = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=10).model_stats[0]
    return s.execution_count, s.inference_count, s.inference_stats.compute_infer.ns


def served_run(port: int, model: str, concurrency: int) -> dict[str, float]:
    """perf_analyzer figures plus the server's own mean compute time and batch size."""
    before = _compute_stats(port, model)
    run = perf_analyzer(model, port, concurrency)
    after = _compute_stats(port, model)
    executions = max(after[0] - before[0], 1)
    run["server_compute_us"] = (after[2] - before[2]) / executions / 1e3
    run["mean_batch"] = (after[1] - before[1]) / executions
    return run


def measure(concurrency: tuple[int, ...] = CONCURRENCY) -> dict[str, Any]:
    """Run the whole benchmark; returns its figures (and the raw runs)."""
    if not PERF_ANALYZER.exists():
        raise FileNotFoundError("perf_analyzer missing: run `make triton-client`")
    figures: dict[str, Any] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        cnn = write_model(repo, "cnn", _reference_cnn(), (3, 32, 32))
        write_model(repo, "digits", _digits_model(), (1, 8, 8))
        base = in_process(cnn, (3, 32, 32))
        figures["cnn_in_process"] = base
        port = free_port()
        server = start_stride_serve(repo, port)
        wait_ready(port, server)
        # The machine may be shared: measure the in-process reference (best batch size)
        # again right before each served run, so that both see the same background load.
        session = _session(cnn)
        refs, runs = {}, {}
        try:
            for c in concurrency:
                before = _rate(session, base["best_batch"], (3, 32, 32), 2.0)
                runs[c] = served_run(port, "cnn", c)
                refs[c] = (before + _rate(session, base["best_batch"], (3, 32, 32), 2.0)) / 2
            digits = perf_analyzer("digits", port, 16)
        finally:
            stop(server)
        echo_port = free_port()
        echo = _start(
            ["-c", ECHO_SERVER, str(echo_port), str(repo / "digits" / "config.pbtxt")], echo_port
        )
        try:
            echo_run = perf_analyzer("digits", echo_port, 16)
        finally:
            stop(echo)
    figures["cnn_served"] = runs
    figures["cnn_reference"] = refs
    figures["cnn_ratio"] = {c: r["throughput"] / refs[c] for c, r in runs.items()}
    if 1 in runs:
        figures["cnn_overhead_p50_us"] = runs[1]["p50_us"] - base["compute_b1_us"]
        figures["cnn_overhead_p99_us"] = runs[1]["p99_us"] - base["compute_b1_us"]
        # The same against the compute time the server measured during that very run
        # (robust to background load that changes between the two measurements).
        compute = runs[1]["server_compute_us"]
        figures["cnn_overhead_p50_vs_server_us"] = runs[1]["p50_us"] - compute
    figures["digits_served"] = digits
    figures["echo_served"] = echo_run
    figures["digits_vs_echo"] = digits["throughput"] / echo_run["throughput"]
    return figures


def print_table(f: dict[str, Any]) -> None:
    base = f["cnn_in_process"]
    print(f"CPU cores: {f['cpu_count']}")
    print("\nReference CNN, in-process ONNX Runtime (images/s by batch size)")
    for n, rate in base["rate_by_batch"].items():
        print(f"  batch {n:>3}: {rate:9.1f}")
    print(f"  best: batch {base['best_batch']} = {base['best_rate']:.1f} images/s; "
          f"batch-1 compute {base['compute_b1_us']:.0f} us")  # fmt: skip
    print("\nReference CNN, stride serve under perf_analyzer (batch-1 requests)")
    print("  (ref: in-process images/s at the best batch size, mean of runs just before and")
    print("   after; ratio = infer/s / ref; compute us and batch: the server's own statistics)")
    print(f"  {'concurrency':>11} {'infer/s':>9} {'ref':>7} {'ratio':>6} {'p50 us':>8} "
          f"{'p99 us':>8} {'compute':>8} {'batch':>6}")  # fmt: skip
    for c, run in f["cnn_served"].items():
        ref, ratio = f["cnn_reference"][c], f["cnn_ratio"][c]
        print(f"  {c:>11} {run['throughput']:9.1f} {ref:7.1f} {ratio:6.2f} "
              f"{run['p50_us']:8.0f} {run['p99_us']:8.0f} {run['server_compute_us']:8.0f} "
              f"{run['mean_batch']:6.1f}"
              + ("" if run["stable"] else "  (unstable windows)"))  # fmt: skip
    if "cnn_overhead_p50_us" in f:
        print(
            f"  concurrency 1 latency minus compute: p50 {f['cnn_overhead_p50_us']:.0f} us, "
            f"p99 {f['cnn_overhead_p99_us']:.0f} us (goal < 1000 us)"
        )
        print("  concurrency 1 p50 minus the server's own compute time in that run: "
              f"{f['cnn_overhead_p50_vs_server_us']:.0f} us")  # fmt: skip
    print("\nDigits model (1x8x8), concurrency 16")
    print(f"  stride serve: {f['digits_served']['throughput']:.1f} req/s, "
          f"p50 {f['digits_served']['p50_us']:.0f} us")  # fmt: skip
    print(f"  minimal gRPC echo server: {f['echo_served']['throughput']:.1f} req/s, "
          f"p50 {f['echo_served']['p50_us']:.0f} us")  # fmt: skip
    print(f"  ratio: {f['digits_vs_echo']:.2f}")


if __name__ == "__main__":
    print_table(measure())
