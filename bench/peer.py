"""The peer: KServe's Python model server with the same ONNX files, under the same load.

KServe (`kserve` on PyPI) installs into its own venv (`make kserve-peer`:
.venv-kserve, since it pins its own protobuf and gRPC). Its Python server speaks
the same KServe v2 gRPC protocol but not Triton's ModelConfig, which perf_analyzer
needs, so both servers are driven by bench/loadgen.py (the same Python client,
batch-1 requests, `concurrency` in flight). Figures: requests/s and p50/p99 of
each, and Stride's requests/s over KServe's (above 1: Stride serves more).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.loadgen import drive  # noqa: E402
from bench.servers import free_port, start_stride_serve, stop, wait_ready  # noqa: E402

KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"


def kserve_version() -> str | None:
    """The installed KServe version, or None when .venv-kserve is absent."""
    if not KSERVE_PYTHON.exists():
        return None
    done = subprocess.run(
        [str(KSERVE_PYTHON), "-c", "import importlib.metadata as m; print(m.version('kserve'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or None


def _wait_v2_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import grpc

    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

    deadline = time.perf_counter() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"KServe exited with {proc.returncode}")
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError("KServe did not become ready")


def start_kserve(models: dict[str, Path]) -> tuple[subprocess.Popen[bytes], int]:
    """KServe's model server with `models` (name -> ONNX file); returns it and its gRPC port."""
    grpc_port, http_port = free_port(), free_port()
    env = dict(
        os.environ,
        KSERVE_PEER_MODELS=",".join(f"{n}={p}" for n, p in models.items()),
        KSERVE_PEER_GRPC_PORT=str(grpc_port),
        KSERVE_PEER_HTTP_PORT=str(http_port),
    )
    proc = subprocess.Popen(
        [str(KSERVE_PYTHON), str(ROOT / "bench" / "kserve_peer.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_v2_ready(grpc_port, proc)
    except Exception:
        stop(proc)
        raise
    return proc, grpc_port


def measure(
    repo: Path,
    models: Mapping[str, tuple[int, ...]],
    concurrency: tuple[int, ...],
    seconds: float = 5.0,
) -> dict[str, Any]:
    """Both servers up at once; for each model and concurrency, Stride then KServe, adjacent."""
    version = kserve_version()
    if version is None:
        return {"skipped": "KServe is not installed: run `make kserve-peer` (.venv-kserve)"}
    port = free_port()
    stride = start_stride_serve(repo, port)
    peer = None
    try:
        wait_ready(port, stride)
        peer, peer_port = start_kserve({m: repo / m / "1" / "model.onnx" for m in models})
        runs: dict[str, Any] = {}
        for model, shape in models.items():
            for c in concurrency:
                ours = drive(port, model, shape, c, seconds=seconds)
                theirs = drive(peer_port, model, shape, c, seconds=seconds)
                runs[f"{model}@{c}"] = {
                    "model": model,
                    "concurrency": c,
                    "stride": ours,
                    "kserve": theirs,
                    "ratio": ours["throughput"] / theirs["throughput"],
                }
    finally:
        stop(stride)
        if peer is not None:
            stop(peer)
    return {"kserve_version": version, "client": "bench/loadgen.py (grpc.aio)", "runs": runs}
