"""Two versions of `stride serve`'s REST front end under the same perf_analyzer load, alternating.

What a change to the REST front end costs in throughput (the move from a hand-written
ASGI app to Starlette was held to at most 10% at concurrency 16; docs/notes/
rest-frontend.md): `stride serve` from another source tree (a `git archive` export
or worktree of the version to compare with) and from this one, one after the other,
round after round (the order flips each round), over the same small linear model (the
case where the front end's own Python work weighs most), driven by perf_analyzer over
HTTP with batch-1 requests. Per round: both rates and their ratio (this tree over the
other); at the end the median ratio.

`--app-only` measures the ASGI app alone instead, in process, in each tree: a
binary-tensor infer request sent through the app with a model that answers at once,
CPU time per request (best of 12 loops of 1,500), so that the framework's own cost
shows without the network, the model or the machine's load.

    git worktree add /tmp/stride-before REVISION     # the version to compare with
    python bench/rest_frontend.py /tmp/stride-before --rounds 4 --concurrency 16
    python bench/rest_frontend.py /tmp/stride-before --app-only
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.repo import linear_model  # noqa: E402
from bench.servers import free_port, perf_analyzer_unusable, perf_run, stop, wait_ready  # noqa: E402


def serve(tree: Path, repo: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`stride serve` of the source tree `tree` (its own code on the path); the REST port."""
    port, http_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "stride.cli", "serve", "--repository", str(repo),
        "--host", "127.0.0.1", "--port", str(port), "--http-port", str(http_port),
        "--metrics-port", "-1", "--log-format", "text",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.Popen(
        command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_ready(port, proc)
    return proc, http_port


def measure(
    other: Path, rounds: int = 4, concurrency: int = 16, window_ms: int = 2000
) -> dict[str, Any]:
    """Rounds of (other tree, this tree) REST throughput; `ratio` is this over the other."""
    reason = perf_analyzer_unusable()
    if reason:
        return {"skipped": reason}
    runs = []
    with tempfile.TemporaryDirectory(prefix="stride-bench-rest-") as tmp:
        repo = Path(tmp) / "repository"
        linear_model(repo, "digits", max_batch=64)
        for i in range(rounds):
            order = [("other", other), ("this", ROOT)]
            if i % 2:
                order.reverse()
            figures: dict[str, Any] = {}
            for label, tree in order:
                proc, http_port = serve(tree, repo)
                try:
                    perf_run("digits", http_port, concurrency, window_ms, False, "http")  # warm
                    figures[label] = perf_run("digits", http_port, concurrency, window_ms, True,
                                              "http")  # fmt: skip
                finally:
                    stop(proc)
            figures["ratio"] = figures["this"]["throughput"] / figures["other"]["throughput"]
            runs.append(figures)
            print(
                f"round {i + 1}: other {figures['other']['throughput']:.0f} infer/s, this "
                f"{figures['this']['throughput']:.0f} infer/s, ratio {figures['ratio']:.3f}",
                flush=True,
            )
    return {
        "concurrency": concurrency,
        "rounds": runs,
        "median_ratio": statistics.median(r["ratio"] for r in runs),
    }


APP_ONLY = """
import asyncio, json, sys, time
import numpy as np
from services.inference.rest_server import HttpOptions
from services.inference.tensors import InferResult, OutputTensor
try:
    from services.inference.rest_app import RestApp
except ImportError:  # older revisions: the hand-written app
    from services.inference.rest_server import RestApp

outputs = [OutputTensor(n, "FP32", [1, 10], np.zeros((1, 10), np.float32))
           for n in ("logits", "probabilities")]

class Core:
    max_bytes_elements = 1024
    async def infer_async(self, request, deadline):
        return InferResult(request.model, "1", request.id, outputs)
    def infer(self, request, deadline):
        return InferResult(request.model, "1", request.id, outputs)

app = RestApp(Core(), HttpOptions())
raw = np.zeros((1, 1, 8, 8), np.float32).tobytes()
head = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                   "parameters": {"binary_data_size": len(raw)}}],
                   "outputs": [{"name": n, "parameters": {"binary_data": True}}
                               for n in ("logits", "probabilities")]}).encode()
body = head + raw
scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
         "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555), "root_path": "",
         "method": "POST", "path": "/v2/models/digits/infer", "query_string": b"",
         "raw_path": b"/v2/models/digits/infer",
         "headers": [(b"host", b"x"), (b"content-type", b"application/octet-stream"),
                     (b"inference-header-content-length", str(len(head)).encode()),
                     (b"content-length", str(len(body)).encode())]}

async def receive():
    return {"type": "http.request", "body": body, "more_body": False}

async def send(message):
    pass

async def loop(n):
    for _ in range(n):
        await app(dict(scope), receive, send)

asyncio.run(loop(2000))
best = float("inf")
for _ in range(12):
    start = time.process_time()
    asyncio.run(loop(1500))
    best = min(best, (time.process_time() - start) / 1500)
print(best * 1e6)
app.pool.shutdown()
"""


def app_cost(tree: Path) -> float:
    """CPU microseconds per request of the REST app of source tree `tree`, alone."""
    done = subprocess.run(
        [sys.executable, "-c", APP_ONLY], cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)),
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="source tree of the version to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--app-only", action="store_true", help="the ASGI app alone, in process")
    args = parser.parse_args()
    if args.app_only:
        for i in range(args.rounds):
            other, this = app_cost(args.other.resolve()), app_cost(ROOT)
            print(f"round {i + 1}: other {other:.1f} us, this {this:.1f} us a request", flush=True)
        return
    out = measure(args.other.resolve(), args.rounds, args.concurrency, args.window_ms)
    if "skipped" in out:
        print(f"skipped: {out['skipped']}")
        return
    ratio = out["median_ratio"]
    print(f"median ratio (this / other) at concurrency {args.concurrency}: {ratio:.3f}")


if __name__ == "__main__":
    main()
