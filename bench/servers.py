"""Starting servers and load generators for the benchmarks and the soak.

`stride serve` runs as a subprocess, as a user runs it; READY means its
`grpc.health.v1` answers SERVING for the whole server. perf_analyzer comes from
`.venv-triton` (`make triton-client`) and needs the CUDA runtime library that
the tritonclient wheel's dependency ships, even on a CPU-only machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERF_ANALYZER = ROOT / ".venv-triton" / "bin" / "perf_analyzer"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_status(port: int, service: str = "", timeout: float = 1.0) -> int:
    """grpc.health.v1 status (1 SERVING, 2 NOT_SERVING, ...), 0 when it does not answer."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return 0
    return int(reply.status)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    """Seconds until the server on `port` answers SERVING; raises if it exits or times out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        if health_status(port, timeout=0.5) == 1:
            return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError(f"server on port {port} not ready after {timeout:.0f} s")


def start_stride_serve(
    repo: Path,
    port: int,
    *,
    poll_interval: float = 0,
    threads: int = 0,
    metrics_port: int = -1,
    http_port: int = -1,
    extra: tuple[str, ...] = (),
    workers: int | None = None,
) -> subprocess.Popen[bytes]:
    """`stride serve` on 127.0.0.1:port over `repo` (not waited for; see `wait_ready`);
    REST on `http_port` (-1: none); `--workers` when given (else its default)."""
    args = [
        sys.executable, "-m", "stride.cli", "serve", "--repository", str(repo),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        "--http-port", str(http_port), "--log-format", "text", "--threads", str(threads),
        *extra,
    ]  # fmt: skip
    if poll_interval:
        args += ["--poll-interval", str(poll_interval)]
    if workers is not None:
        args += ["--workers", str(workers)]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM, wait for the exit status (SIGKILL after `timeout`)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def perf_analyzer_env() -> dict[str, str]:
    """The environment perf_analyzer needs (its CUDA runtime library from the venv)."""
    libs = (ROOT / ".venv-triton" / "lib").glob("python3*/site-packages/nvidia/cuda_runtime/lib")
    paths = [*(str(p) for p in libs), os.environ.get("LD_LIBRARY_PATH", "")]
    return dict(os.environ, LD_LIBRARY_PATH=":".join(p for p in paths if p))


def perf_analyzer_command(
    model: str, port: int, concurrency: int, window_ms: int, passes: int, stability: int
) -> list[str]:
    """perf_analyzer over gRPC with batch-1 requests of random data, reporting p99 per pass."""
    if not PERF_ANALYZER.exists():
        raise FileNotFoundError(f"{PERF_ANALYZER} missing: run `make triton-client`")
    return [
        str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{port}", "-i", "grpc", "-b", "1",
        "--concurrency-range", str(concurrency), "-p", str(window_ms), "-r", str(passes),
        "-s", str(stability), "--percentile", "99", "-v", "--input-data", "random",
    ]  # fmt: skip


def perf_analyzer_unusable() -> str | None:
    """Why perf_analyzer cannot run here (missing, or libraries it cannot find), or None."""
    if not PERF_ANALYZER.exists():
        return "perf_analyzer missing: `make triton-client` makes .venv-triton"
    probe = subprocess.run(
        ["ldd", str(PERF_ANALYZER)], capture_output=True, text=True, env=perf_analyzer_env()
    )
    if "not found" in probe.stdout:
        return f"perf_analyzer lacks libraries: {probe.stdout.strip()}"
    return None


def perf_run(
    model: str,
    port: int,
    concurrency: int,
    window_ms: int,
    retry: bool = True,
    protocol: str = "grpc",
) -> dict[str, float]:
    """One perf_analyzer measurement (batch-1 requests of zeros, over `protocol`: grpc or
    http): throughput (infer/s) and
    p50/p99 latency (us). perf_analyzer wants three windows within 30% of each other; on a
    busy machine that may not happen, so a second try (or, with `retry=False`, the first)
    accepts any three, and then `stable` is 0."""
    stable = 1.0 if retry else 0.0
    for stability in (30, 1000) if retry else (1000,):
        command = [
            str(PERF_ANALYZER), "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol,
            "-b", "1", "--concurrency-range", str(concurrency), "-p", str(window_ms), "-r", "6",
            "-s", str(stability), "--input-data", "zero",
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=300, env=perf_analyzer_env()
        )
        out = done.stdout + done.stderr
        if "Failed to obtain stable measurement" not in out:
            break
        stable = 0.0

    def number(pattern: str) -> float:
        found = re.findall(pattern, out)
        if not found:
            raise RuntimeError(f"perf_analyzer output lacks {pattern!r}:\n{out}")
        return float(found[-1])

    return {
        "throughput": number(r"Throughput: ([\d.]+) infer/sec"),
        "p50_us": number(r"p50 latency: (\d+) usec"),
        "p99_us": number(r"p99 latency: (\d+) usec"),
        "stable": stable,
    }
