"""perf_analyzer over concurrency for one model, against in-process ONNX Runtime at its best batch.

bench/serving.py measures the reference CNN this way (and the digits model against a
gRPC echo server); this module does the same for any model of that benchmark, with
shorter windows when asked, so that the harness can cover the digits model and run a
quick version. Reference rates are measured right before and after each served run,
in this process, so both see the same background load.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import serving  # noqa: E402
from bench.servers import free_port, perf_run, start_stride_serve, stop, wait_ready  # noqa: E402

SHAPES = {"cnn": (3, 32, 32), "digits": (1, 8, 8)}


def write_models(repo: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Export the serving benchmark's models (torch) into `repo`; returns their ONNX paths."""
    builders = {"cnn": serving._reference_cnn, "digits": serving._digits_model}
    return {name: serving.write_model(repo, name, builders[name](), SHAPES[name]) for name in names}


def sweep(
    repo: Path,
    model: str,
    concurrency: tuple[int, ...],
    *,
    window_ms: int = 3000,
    batch_sizes: tuple[int, ...] = serving.BATCH_SIZES,
    ref_seconds: float = 1.5,
    retry: bool = True,
) -> dict[str, Any]:
    """perf_analyzer at each concurrency against `stride serve`, each over the in-process rate."""
    shape = SHAPES[model]
    path = repo / model / "1" / "model.onnx"
    base = serving.in_process(path, shape, ref_seconds, batch_sizes)
    session = serving._session(path)
    port = free_port()
    server = start_stride_serve(repo, port)
    runs: dict[int, Any] = {}
    try:
        wait_ready(port, server)
        for c in concurrency:
            before = serving._rate(session, base["best_batch"], shape, ref_seconds)
            run = perf_run(model, port, c, window_ms, retry)
            after = serving._rate(session, base["best_batch"], shape, ref_seconds)
            run["reference"] = (before + after) / 2
            run["ratio"] = run["throughput"] / run["reference"]
            runs[c] = run
    finally:
        stop(server)
    return {"in_process": base, "served": runs}


def echo_comparison(
    repo: Path,
    window_ms: int = 3000,
    concurrency: int = 16,
    stride: dict[str, float] | None = None,
    retry: bool = True,
) -> dict[str, Any]:
    """The digits model's requests/s through `stride serve` over a minimal gRPC echo server.

    `stride`: a perf_run of the digits model at `concurrency` measured just before, to reuse.
    """
    if stride is None:
        port = free_port()
        server = start_stride_serve(repo, port)
        try:
            wait_ready(port, server)
            stride = perf_run("digits", port, concurrency, window_ms, retry)
        finally:
            stop(server)
    port = free_port()
    config = str(repo / "digits" / "config.pbtxt")
    echo = subprocess.Popen(
        [sys.executable, "-c", serving.ECHO_SERVER, str(port), config],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, echo)
        floor = perf_run("digits", port, concurrency, window_ms, retry)
    finally:
        stop(echo)
    return {
        "concurrency": concurrency,
        "stride": stride,
        "echo": floor,
        "ratio": stride["throughput"] / floor["throughput"],
    }
