"""Start-up and memory of `stride serve`, each over a baseline measured in the same run.

- Time from `stride serve` start (the process is spawned) to READY (health SERVING),
  over the same for the minimal gRPC echo server of bench/serving.py: the floor any
  Python gRPC server pays (interpreter, grpc import, bind). Median of `repeats`.
- Resident memory per loaded model: (RSS with N copies of the model - RSS with an
  empty repository) / N, over the same for bare ONNX Runtime sessions in a fresh
  Python process given the same warm-up batches (1, the preferred sizes, the maximum).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import serving  # noqa: E402
from bench.servers import free_port, rss_mb, start_stride_serve, stop, wait_ready  # noqa: E402

# A fresh process: RSS before and after N sessions, each warmed up like the server does.
BARE_SESSIONS = """
import json, sys, time
import numpy as np
import onnxruntime as ort
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
path, n, shape = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
sizes = [1, 16, 32, 64]
x = {s: np.zeros((s, *shape), np.float32) for s in sizes}
time.sleep(0.5)
before = rss()
sessions = []
for _ in range(n):
    so = ort.SessionOptions()
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for size in sizes:
        s.run(None, {"input": x[size]})
    sessions.append(s)
time.sleep(0.5)
print(json.dumps({"before": before, "after": rss()}))
"""


def _ready_seconds(args: list[str], port: int) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        return time.perf_counter() - start
    finally:
        stop(proc)


def ready_times(repo: Path, repeats: int) -> dict[str, Any]:
    """Median seconds to READY of `stride serve` over `repo` and of the echo server."""
    config = str(next(repo.glob("*/config.pbtxt")))
    stride, echo = [], []
    for _ in range(repeats):  # interleaved: both see the same background load
        port = free_port()
        serve = ["serve", "--repository", str(repo), "--host", "127.0.0.1", "--port", str(port)]
        serve += ["--metrics-port", "-1", "--http-port", "-1"]
        command = [sys.executable, "-m", "stride.cli", *serve]
        stride.append(_ready_seconds(command, port))
        port = free_port()
        command = [sys.executable, "-c", serving.ECHO_SERVER, str(port), config]
        echo.append(_ready_seconds(command, port))
    return {
        "models": sorted(p.parent.name for p in repo.glob("*/config.pbtxt")),
        "stride_ready_s": statistics.median(stride),
        "echo_ready_s": statistics.median(echo),
        "ratio": statistics.median(stride) / statistics.median(echo),
        "runs": {"stride": stride, "echo": echo},
    }


def _server_rss(repo: Path) -> float:
    port = free_port()
    server = start_stride_serve(repo, port)
    try:
        wait_ready(port, server)
        time.sleep(1.0)  # let start-up allocations settle
        return rss_mb(server.pid)
    finally:
        stop(server)


def memory_per_model(model_dir: Path, copies: int) -> dict[str, Any]:
    """MiB per loaded model in `stride serve` and per bare ONNX Runtime session."""
    with tempfile.TemporaryDirectory(prefix="stride-mem-") as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        empty.mkdir()
        for i in range(copies):
            name = f"{model_dir.name}{i}"
            shutil.copytree(model_dir, full / name)
            config = full / name / "config.pbtxt"
            text = config.read_text().replace(f'name: "{model_dir.name}"', f'name: "{name}"')
            config.write_text(text)
        base = _server_rss(empty)
        loaded = _server_rss(full)
    path = model_dir / "1" / "model.onnx"
    shape = json.dumps(list(serving_shape(model_dir)))
    done = subprocess.run(
        [sys.executable, "-c", BARE_SESSIONS, str(path), str(copies), shape],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    bare = json.loads(done.stdout)
    server_mb = (loaded - base) / copies
    bare_mb = (bare["after"] - bare["before"]) / copies
    return {
        "model": model_dir.name,
        "copies": copies,
        "server_rss_empty_mb": base,
        "server_rss_loaded_mb": loaded,
        "server_mb_per_model": server_mb,
        "bare_session_mb": bare_mb,
        "ratio": server_mb / bare_mb if bare_mb > 0 else None,
    }


def serving_shape(model_dir: Path) -> tuple[int, ...]:
    """The input dims of a model folder's config.pbtxt (after the batch dimension)."""
    import re

    text = (model_dir / "config.pbtxt").read_text()
    found = re.search(r"input \[ \{[^}]*dims: \[ ([\d, ]+) \]", text)
    if not found:
        raise ValueError(f"{model_dir}/config.pbtxt: no input dims")
    return tuple(int(d) for d in found.group(1).split(","))
