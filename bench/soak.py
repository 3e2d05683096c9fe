"""Soak: perf_analyzer at concurrency 64 against `stride serve` while the model is replaced;
then, against `stride serve` and `stride serve-analysis` started as deploy/ starts them
(under the pod's memory limit), a well-behaved load while a hostile client attacks
(bench/soak_adversarial.py, bench/soak_analysis.py).

    python bench/soak.py --minutes 10          # `make soak` (SOAK_MINUTES): the three phases
    python bench/soak.py --minutes 0.75 --window 15 --phase swap
    python bench/soak.py --minutes 1 --window 15 --phase adversarial
    python bench/soak.py --minutes 1 --phase analysis

Each phase runs for --minutes; its figures and verdict are printed, and with --json
written together (the adversarial ones under "adversarial", the analysis ones under
"analysis").

perf_analyzer keeps the load on for the whole time and reports a measurement window
of `--window` seconds (one a minute by default) after another; each window is
timestamped as it is reported. Once half the windows are in (for an odd count, half
a window later), version 2 of the model is published the way `stride export` does it
(built under `.tmp-*`, renamed into place); as soon as the server (polling the
repository every second) has it ready, version 1's folder is removed. Meanwhile the
server's resident memory is sampled every second and its per-version failure counts
are read from ModelStatistics.

Pass, printed and checked (the exit status is 1 otherwise):
- zero failed requests: perf_analyzer reports no error, the server counts none;
- resident memory growth under 10% between the first and the last window (mean RSS
  over each window's time span);
- p99 latency of the last window at most 20% above the first window's.

The model is a small linear classifier (1x8x8 -> 10) built with onnx, so the load
is the server's own work (gRPC, batching, the swap), not matrix arithmetic.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.repo import linear_model, publish_version, remove_version  # noqa: E402
from bench.servers import (  # noqa: E402
    free_port,
    perf_analyzer_command,
    perf_analyzer_env,
    rss_mb,
    start_stride_serve,
    stop,
    wait_ready,
)

MAX_MEMORY_GROWTH = 0.10
MAX_P99_GROWTH = 0.20
PASS_LINE = re.compile(r"Pass \[(\d+)\] throughput: ([\d.]+) infer/sec\. p99 latency: (\d+) usec")


@dataclass
class Sampler:
    """Samples the server's RSS and per-version failure counts in a thread."""

    pid: int
    port: int
    model: str
    # The server's channel and the token's metadata (a TLS server with a token); default
    # a plaintext channel to 127.0.0.1:port without a token.
    channel: Any = None
    metadata: tuple[tuple[str, str], ...] = ()
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    failures: dict[str, int] = field(default_factory=dict)  # version -> most seen
    successes: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, start: float) -> None:
        import grpc

        from services.generated.inference import grpc_service_pb2 as pb
        from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

        opened = self.channel() if self.channel else grpc.insecure_channel(f"127.0.0.1:{self.port}")
        with opened as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not self._stop.wait(1.0):
                self.rss.append((time.perf_counter() - start, rss_mb(self.pid)))
                try:
                    reply = stub.ModelStatistics(
                        pb.ModelStatisticsRequest(name=self.model),
                        timeout=5,
                        metadata=self.metadata,
                    )
                except grpc.RpcError:
                    continue
                for s in reply.model_stats:
                    fail = s.inference_stats.fail.count
                    self.failures[s.version] = max(self.failures.get(s.version, 0), fail)
                    ok = s.inference_stats.success.count
                    self.successes[s.version] = max(self.successes.get(s.version, 0), ok)

    def stop(self) -> None:
        self._stop.set()


def _swap(folder: Path, port: int, start: float, delay: float, events: dict[str, float]) -> None:
    """After `delay` seconds: publish version 2, wait until it is ready, remove version 1."""
    import grpc

    from services.generated.inference import grpc_service_pb2 as pb
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

    time.sleep(delay)
    events["published_s"] = time.perf_counter() - start
    publish_version(folder, 2)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelReadyRequest(name=folder.name, version="2")
        deadline = time.perf_counter() + 60
        ready = False
        while not ready and time.perf_counter() < deadline:
            with contextlib.suppress(grpc.RpcError):
                ready = stub.ModelReady(request, timeout=5).ready
            if not ready:
                time.sleep(0.05)
    if not ready:
        return  # version 1 stays: `check` reports the swap as not completed
    events["version_2_ready_s"] = time.perf_counter() - start
    remove_version(folder, 1)
    events["version_1_removed_s"] = time.perf_counter() - start


def _window_mean(samples: list[tuple[float, float]], lo: float, hi: float) -> float:
    values = [v for t, v in samples if lo <= t <= hi and v > 0]
    return sum(values) / len(values) if values else 0.0


def _load(
    command: list[str], passes: int, start: float, on_half: Any, timeout: float
) -> tuple[list[dict[str, Any]], str, int]:
    """Run perf_analyzer, timestamping each window as it is reported; `on_half()` is called
    once half the windows are done (perf_analyzer keeps the load on between windows)."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=perf_analyzer_env(),
    )
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    windows: list[dict[str, Any]] = []
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        found = PASS_LINE.search(line)
        if found:
            n, tp, p99 = found.groups()
            end = time.perf_counter() - start
            windows.append({"pass": int(n), "throughput": float(tp), "p99_us": int(p99),
                            "end_s": end})  # fmt: skip
            if len(windows) == passes // 2:
                on_half()
    code = proc.wait()
    killer.cancel()
    return windows, "".join(lines), code


def soak(minutes: float, window_s: float = 60, concurrency: int = 64) -> dict[str, Any]:
    """Run the soak and return its figures (see `check` for the verdict)."""
    passes = max(2, round(minutes * 60 / window_s))
    with tempfile.TemporaryDirectory(prefix="stride-soak-") as tmp:
        repo = Path(tmp)
        folder = linear_model(repo, "digits", max_batch=64)
        port = free_port()
        server = start_stride_serve(repo, port, poll_interval=1)
        try:
            ready_s = wait_ready(port, server)
            command = perf_analyzer_command(
                "digits", port, concurrency, int(window_s * 1000), passes, stability=0
            )
            start = time.perf_counter()
            sampler = Sampler(server.pid, port, "digits")
            events: dict[str, float] = {}
            watcher = threading.Thread(target=sampler.run, args=(start,), daemon=True)
            # Halfway: after the middle window, or in the middle of it for an odd count.
            delay = window_s / 2 if passes % 2 else 0.0
            swapper = threading.Thread(
                target=_swap, args=(folder, port, start, delay, events), daemon=True
            )
            watcher.start()
            windows, output, code = _load(
                command, passes, start, swapper.start, timeout=passes * window_s * 2 + 300
            )
            elapsed = time.perf_counter() - start
            if swapper.ident is not None:  # started: half the windows were reported
                swapper.join(timeout=60)
            time.sleep(1.5)  # one more statistics sample after the last request
            sampler.stop()
            watcher.join(timeout=10)
        finally:
            exit_code = stop(server)
    errors = [line.strip() for line in output.splitlines() if "error" in line.lower()]
    first, last = (windows[0], windows[-1]) if windows else ({}, {})
    first_rss = _window_mean(sampler.rss, first.get("end_s", 0) - window_s, first.get("end_s", 0))
    last_rss = _window_mean(sampler.rss, last.get("end_s", 0) - window_s, last.get("end_s", 0))
    return {
        "minutes": passes * window_s / 60,
        "window_s": window_s,
        "concurrency": concurrency,
        "server_ready_s": ready_s,
        "elapsed_s": elapsed,
        "windows": windows,
        "passes_expected": passes,
        "perf_analyzer_errors": errors[:10],
        "perf_analyzer_exit": code,
        "requests_in_windows": round(sum(w["throughput"] for w in windows) * window_s),
        "server_failures": sum(sampler.failures.values()),
        "server_successes": sum(sampler.successes.values()),
        "rss_first_window_mb": first_rss,
        "rss_last_window_mb": last_rss,
        "rss_peak_mb": max((v for _, v in sampler.rss), default=0.0),
        "memory_growth": last_rss / first_rss - 1 if first_rss else None,
        "p99_first_us": first.get("p99_us"),
        "p99_last_us": last.get("p99_us"),
        "p99_growth": last["p99_us"] / first["p99_us"] - 1 if windows else None,
        "swap": events,
        "server_exit": exit_code,
    }


def check(result: dict[str, Any], *, latency: bool = True) -> list[str]:
    """The pass criteria that failed (empty: the soak passed).

    `latency=False` leaves out the p99 trend: a latency figure over minutes of a shared
    machine is the bench's to print, not a test's to assert (tests/bench/test_soak.py).
    """
    failed = []
    if result["perf_analyzer_errors"] or result["server_failures"]:
        failed.append(
            f"failed requests: server counted {result['server_failures']}, perf_analyzer said "
            f"{result['perf_analyzer_errors'][:2]}"
        )
    if len(result["windows"]) != result["passes_expected"]:
        failed.append(
            f"perf_analyzer ran {len(result['windows'])} of {result['passes_expected']} windows"
        )
    if "version_1_removed_s" not in result["swap"]:
        failed.append("the model swap did not complete")
    growth = result["memory_growth"]
    if growth is None or growth >= MAX_MEMORY_GROWTH:
        failed.append(f"resident memory grew {growth} (limit {MAX_MEMORY_GROWTH:.0%})")
    p99 = result["p99_growth"]
    if latency and (p99 is None or p99 > MAX_P99_GROWTH):
        failed.append(f"p99 latency grew {p99} (limit {MAX_P99_GROWTH:.0%})")
    return failed


def report(result: dict[str, Any]) -> str:
    """The soak's figures as text."""
    lines = [
        f"soak: {result['minutes']:.1f} min at concurrency {result['concurrency']}, "
        f"{result['window_s']:.0f} s windows; {result['server_successes']:,} requests served, "
        f"{result['requests_in_windows']:,} in the measured windows",
        f"  {'window':>6} {'ends at s':>9} {'infer/s':>9} {'p99 ms':>8}",
    ]
    for w in result["windows"]:
        p99_ms = w["p99_us"] / 1000
        lines.append(f"  {w['pass']:>6} {w['end_s']:>9.0f} {w['throughput']:>9.1f} {p99_ms:>8.1f}")
    swap = result["swap"]
    if swap:
        lines.append(
            "  swap: version 2 published at {:.1f} s, ready at {:.1f} s, version 1 removed "
            "at {:.1f} s".format(
                swap.get("published_s", -1),
                swap.get("version_2_ready_s", -1),
                swap.get("version_1_removed_s", -1),
            )
        )
    growth, p99 = result["memory_growth"], result["p99_growth"]
    lines += [
        f"  failed requests: {result['server_failures']} (server), "
        f"{len(result['perf_analyzer_errors'])} error lines (perf_analyzer)",
        f"  RSS: first window {result['rss_first_window_mb']:.1f} MiB, last "
        f"{result['rss_last_window_mb']:.1f} MiB, peak {result['rss_peak_mb']:.1f} MiB: "
        + (f"growth {growth:+.1%} (limit +10%)" if growth is not None else "no samples"),
        f"  p99: first window {result['p99_first_us']} us, last {result['p99_last_us']} us: "
        + (f"{p99:+.1%} (limit +20%)" if p99 is not None else "no windows"),
        f"  server exit status after SIGTERM: {result['server_exit']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per window")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--phase",
        choices=["all", "swap", "adversarial", "analysis"],
        default="all",
        help="the model swap, the hostile client against stride serve or against "
        "serve-analysis, or all three one after the other (each --minutes)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    failed: list[str] = []
    if args.phase in ("all", "swap"):
        result = soak(args.minutes, args.window, args.concurrency)
        failed += check(result)
        print(report(result))
    if args.phase in ("all", "adversarial"):
        from bench import soak_adversarial

        hostile = soak_adversarial.adversarial(args.minutes, args.window, args.concurrency)
        hostile_failed = soak_adversarial.check(hostile)
        hostile["failed_criteria"] = hostile_failed
        failed += [f"adversarial: {f}" for f in hostile_failed]
        result["adversarial"] = hostile
        print(soak_adversarial.report(hostile))
    if args.phase in ("all", "analysis"):
        from bench import soak_analysis

        analysis = soak_analysis.adversarial(args.minutes)
        analysis_failed = soak_analysis.check(analysis)
        analysis["failed_criteria"] = analysis_failed
        failed += [f"analysis: {f}" for f in analysis_failed]
        result["analysis"] = analysis
        print(soak_analysis.report(analysis))
    result["failed_criteria"] = failed
    print("PASS" if not failed else "FAIL:\n  " + "\n  ".join(failed))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
