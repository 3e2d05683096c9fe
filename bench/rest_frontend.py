"""Two versions of `stride serve`'s REST front end under the same perf_analyzer load, alternating.

Issue 24 moved the REST front end from a hand-written ASGI app to Starlette, on the
condition that the framework cost no more than 10% of REST throughput at concurrency
16. This measures it: `stride serve` from another source tree (a `git archive` export
or worktree of the version to compare with) and from this one, one after the other,
round after round (the order flips each round), over the same small linear model (the
case where the front end's own Python work weighs most), driven by perf_analyzer over
HTTP with batch-1 requests. Per round: both rates and their ratio (this tree over the
other); at the end the median ratio.

    python bench/rest_frontend.py /tmp/stride-27da570 --rounds 4 --concurrency 16
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="source tree of the version to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--window-ms", type=int, default=2000)
    args = parser.parse_args()
    out = measure(args.other.resolve(), args.rounds, args.concurrency, args.window_ms)
    if "skipped" in out:
        print(f"skipped: {out['skipped']}")
        return
    ratio = out["median_ratio"]
    print(f"median ratio (this / other) at concurrency {args.concurrency}: {ratio:.3f}")


if __name__ == "__main__":
    main()
