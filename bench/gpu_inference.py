"""GPU mode, inference: the reference CNN on ONNX Runtime's CUDA provider.

- in-process ONNX Runtime on CUDA at its best batch size over the same on the CPU;
- `stride serve` with a KIND_GPU instance group under perf_analyzer (batch-1
  requests) over in-process CUDA at its best batch size.

Needs onnxruntime-gpu with working CUDA libraries; without them the section says
so and measures nothing (the serving image for GPUs, deploy/, installs them).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import serving  # noqa: E402
from bench.servers import free_port, perf_run, start_stride_serve, stop, wait_ready  # noqa: E402

CUDA = "CUDAExecutionProvider"
SHAPE = (3, 32, 32)
GPU_BATCHES = (1, 16, 64, 256, 1024)


def _cuda_rates(path: Path, seconds: float) -> dict[int, float] | str:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=[CUDA])
    if session.get_providers()[0] != CUDA:
        return f"ONNX Runtime placed the session on {session.get_providers()[0]}, not CUDA"
    return {n: serving._rate(session, n, SHAPE, seconds) for n in GPU_BATCHES}


def measure(repo: Path, quick: bool = False) -> dict[str, Any]:
    """CUDA vs CPU in-process, and `stride serve` on CUDA vs in-process CUDA."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return {
            "skipped": f"onnxruntime {ort.__version__} here has no {CUDA} "
            f"(providers: {', '.join(ort.get_available_providers())}); "
            "install onnxruntime-gpu for this figure"
        }
    seconds = 0.5 if quick else 1.5
    path = repo / "cnn" / "1" / "model.onnx"
    cuda = _cuda_rates(path, seconds)
    if isinstance(cuda, str):
        return {"skipped": cuda}
    cpu = serving.in_process(path, SHAPE, seconds, (1, 16, 64))
    best = max(cuda, key=lambda n: cuda[n])
    out: dict[str, Any] = {
        "cuda_rate_by_batch": cuda,
        "cuda_best_batch": best,
        "cuda_best_rate": cuda[best],
        "cpu_best_batch": cpu["best_batch"],
        "cpu_best_rate": cpu["best_rate"],
        "served": {},
    }
    with tempfile.TemporaryDirectory(prefix="stride-gpu-repo-") as tmp:
        gpu_repo = Path(tmp)
        shutil.copytree(repo / "cnn", gpu_repo / "cnn")
        config = gpu_repo / "cnn" / "config.pbtxt"
        config.write_text(config.read_text().replace("KIND_CPU", "KIND_GPU"))
        port = free_port()
        server = start_stride_serve(gpu_repo, port)
        try:
            wait_ready(port, server)
            for c in (16,) if quick else (16, 64):
                out["served"][c] = perf_run("cnn", port, c, 1000 if quick else 3000)
        finally:
            stop(server)
    return out
