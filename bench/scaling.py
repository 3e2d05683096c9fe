"""Scaling with cores: `stride serve --workers N` under many client connections.

perf_analyzer shares one gRPC connection among up to six of its concurrent requests
(tritonclient's channel cache), so at concurrency 64 it opens 11 connections, too few
for the kernel to spread evenly over 8 server processes. This load generator opens one
connection per concurrent request: `connections` grpc.aio channels, each with a
subchannel of its own, split over `processes` client processes (one Python process
cannot drive many connections fast), each keeping one batch-1 request in flight per
connection. The configurations alternate (1, 2, 4, 8 workers, then 8, 4, 2, 1, ...), each
on a freshly started server, so that a change in the machine's background load falls on
all of them. Figures per run: infer/s, p50/p99, the CPU cores the server (supervisor and
workers) and the clients used, and the load average when it started.

    python bench/scaling.py                      # digits, workers 1 2 4 8, two rounds
    python bench/scaling.py --model cnn --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import free_port, stop, wait_ready  # noqa: E402

SHAPES = {"cnn": (3, 32, 32), "digits": (1, 8, 8)}
WORKERS = (1, 2, 4, 8)
CLIENT_PROCESSES = 4


# The clients ------------------------------------------------------------------------


async def _client(
    port: int, model: str, shape: tuple[int, ...], connections: int, warmup: float,
    seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """One client process: connect every channel, say "ready", read the start time (a
    line on stdin), then keep one request in flight per channel until the window ends."""
    import grpc

    from bench.loadgen import _request
    from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

    request = _request(model, shape)
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(connections)
    ]
    await asyncio.gather(*(ch.channel_ready() for ch in channels))
    print("ready", flush=True)
    start = float(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    latencies: list[float] = []
    errors: list[str] = []
    measure_from, measure_to = start + warmup, start + warmup + seconds
    cpu: dict[str, float] = {}

    async def one(channel: Any) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while (sent := time.time()) < measure_to:
            try:
                await stub.ModelInfer(request, timeout=60)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
                await asyncio.sleep(0.01)
                continue
            if sent >= measure_from:
                latencies.append(time.time() - sent)

    async def clock() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.time()))
        cpu["from"] = time.process_time()
        await asyncio.sleep(max(0.0, measure_to - time.time()))
        cpu["to"] = time.process_time()

    await asyncio.sleep(max(0.0, start - time.time()))
    await asyncio.gather(clock(), *(one(ch) for ch in channels))
    for channel in channels:
        await channel.close()
    return {
        "latencies_us": [round(x * 1e6, 1) for x in latencies],
        "errors": len(errors),
        "first_errors": errors[:3],
        "cpu_s": cpu.get("to", 0.0) - cpu.get("from", 0.0),
    }


def drive(
    port: int,
    model: str,
    connections: int = 64,
    *,
    processes: int = CLIENT_PROCESSES,
    warmup: float = 2.0,
    seconds: float = 5.0,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """`connections` connections, each with one batch-1 request in flight, from `processes`
    client processes; infer/s, p50/p99 (us), errors, the clients' CPU cores and those of
    the server's process tree (`server_pid`) in the same window."""
    processes = max(1, min(processes, connections))
    procs = []
    for i in range(processes):
        share = connections // processes + (1 if i < connections % processes else 0)
        args = [str(port), model, str(share), str(warmup), str(seconds)]
        procs.append(
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--client", *args],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:  # every client connected before any starts
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a client process could not connect")
    start = time.time() + 0.2
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    server_cpu = 0.0
    if server_pid is not None:  # the server's CPU time within the measured window
        time.sleep(max(0.0, start + warmup - time.time()))
        before = _tree_cpu_s(server_pid)
        time.sleep(max(0.0, start + warmup + seconds - time.time()))
        server_cpu = _tree_cpu_s(server_pid) - before
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=warmup + seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"a client process exited with {proc.returncode}")
        results.append(json.loads(out))
    latencies = np.asarray([x for r in results for x in r["latencies_us"]])
    errors = sum(r["errors"] for r in results)
    if latencies.size == 0:
        raise RuntimeError(f"no request succeeded: {[r['first_errors'] for r in results]}")
    return {
        "throughput": latencies.size / seconds,
        "p50_us": float(np.percentile(latencies, 50)),
        "p99_us": float(np.percentile(latencies, 99)),
        "errors": errors,
        "client_cores": sum(r["cpu_s"] for r in results) / seconds,
        "server_cores": server_cpu / seconds,
    }


# The servers ------------------------------------------------------------------------


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and its children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return total


def _start(repo: Path, workers: int, port: int) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "stride.cli", "serve", "--repository", str(repo),
        "--host", "127.0.0.1", "--port", str(port), "--http-port", "-1",
        "--metrics-port", "-1", "--log-format", "text", "--workers", str(workers),
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def run_once(
    repo: Path, model: str, workers: int, connections: int, seconds: float
) -> dict[str, Any]:
    """A fresh `stride serve --workers N` under the load; its figures."""
    port = free_port()
    server = _start(repo, workers, port)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()  # printed once every worker serves
        if "listening on" not in line:
            raise RuntimeError(f"stride serve --workers {workers} did not start: {line!r}")
        wait_ready(port, server)
        load = os.getloadavg()[0]
        result = drive(port, model, connections, seconds=seconds, server_pid=server.pid)
        result["load_average"] = load
        result["workers"] = workers
    finally:
        stop(server, timeout=60)
    return result


def measure(
    repo: Path,
    models: Sequence[str] = ("digits",),
    workers: Sequence[int] = WORKERS,
    *,
    rounds: int = 2,
    connections: int = 64,
    seconds: float = 5.0,
) -> dict[str, Any]:
    """For each model, `rounds` rounds over `workers` (the order reversed every other round);
    per configuration every run, and the median infer/s with its ratio to one worker."""
    out: dict[str, Any] = {
        "connections": connections,
        "client": f"bench/scaling.py: {connections} grpc.aio connections in "
        f"{min(CLIENT_PROCESSES, connections)} processes, one request in flight on each",
        "cores": len(os.sched_getaffinity(0)),
        "models": {},
    }
    for model in models:
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in workers}
        for r in range(rounds):
            order = list(workers) if r % 2 == 0 else list(reversed(workers))
            for n in order:
                runs[n].append(run_once(repo, model, n, connections, seconds))
        medians = {n: float(np.median([x["throughput"] for x in rs])) for n, rs in runs.items()}
        base = medians[workers[0]]
        out["models"][model] = {
            "runs": runs,
            "median": medians,
            "over_first": {n: m / base for n, m in medians.items()},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="digits", choices=sorted(SHAPES))
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.client:
        port, model, conns, warmup, seconds = args.client
        result = asyncio.run(
            _client(int(port), model, SHAPES[model], int(conns), float(warmup), float(seconds))
        )
        print(json.dumps(result))
        return 0
    import tempfile

    from bench.serving_sweep import write_models

    with tempfile.TemporaryDirectory(prefix="stride-bench-scaling-") as tmp:
        write_models(Path(tmp), (args.model,))
        workers = tuple(int(n) for n in args.workers.split(","))
        result = measure(Path(tmp), (args.model,), workers, rounds=args.rounds,
                         connections=args.connections, seconds=args.seconds)  # fmt: skip
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
