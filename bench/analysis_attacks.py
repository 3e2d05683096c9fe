"""Hostile clients of `stride serve-analysis` (large runs, unfinished lines, slow
renders, a SIGTERM with renders queued), sized by their arguments, the run stores
they need, and what they measure on the server.

- `large_runs`: legal runs whose metrics parse into far more memory than their size
  on disk: a server must bound what parsed runs take, not how many it keeps.
- `unfinished_line`: a run whose last metrics line is being written and never ends,
  followed by many WatchRun streams polling fast: a follower must not read
  it again on every poll.
- `slow_renders`: many large RenderComparison calls with a short deadline:
  they must queue within a bound, the rest be refused at once, and the work
  of clients that left must stop.

The resilience tests (tests/services/test_resilience_analysis.py) run each scaled down
to seconds. What the server did is read from /proc: resident memory (bench.servers.
rss_mb), bytes read from files (`read_bytes`) and CPU seconds (`cpu_seconds`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench.attacks import Outcome
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def read_bytes(pid: int) -> int:
    """Bytes a process has read through read() and friends (/proc/PID/io `rchar`)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_idle(pid: int, busy_rate: float, *, quiet: float = 2.0, timeout: float = 120.0) -> float:
    """Wait until a process has been idle for `quiet` seconds, and return the CPU seconds
    it used meanwhile. Idle is relative to `busy_rate`, the CPU seconds per second the
    process got while it worked (on a loaded machine that is a fraction of a core):
    under a fifth of that (and under 1%). TimeoutError after `timeout` seconds of work."""
    idle = max(0.2 * busy_rate, 0.01) * quiet
    start = cpu_seconds(pid)
    end = time.monotonic() + timeout
    last = start
    while time.monotonic() < end:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last < idle:
            return now - start
        last = now
    raise TimeoutError(f"process {pid} still busy after {timeout:.0f} s")


# ---------------------------------------------------------------- run stores


def _epoch(epoch: int, layers: int, *, dense: bool = False) -> dict[str, Any]:
    accuracy = min(0.99, 0.5 + epoch / 200)
    record: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": 1.05 - accuracy,
        "train_accuracy": accuracy,
        "val_loss": 1.0 - accuracy,
        "val_accuracy": accuracy,
        "lr": 0.01,
        "epoch_seconds": 1.0,
        "elapsed_seconds": float(epoch),
        "images_per_second": 1000.0,
    }
    record["grad_norms"] = [
        {"layer": f"l{i}" if dense else f"features.{i}.conv", "norm": 0.5 if dense else 0.1 * i}
        for i in range(layers)
    ]
    return record


def write_run(
    root: Path,
    experiment: str,
    run_id: str,
    *,
    seed: int = 0,
    lines: bytes = b"",
    finished: bool = True,
) -> Path:
    """A run folder as training writes it: config.json, metrics.jsonl, summary.json."""
    folder = root / experiment / run_id
    folder.mkdir(parents=True, exist_ok=True)
    config = {"seed": seed, "optimizer": {"name": "adam", "lr": 0.01}}
    meta = {"schema": 1, "experiment": experiment, "run_id": run_id, "config": config}
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "metrics.jsonl").write_bytes(lines)
    if finished:
        epochs = lines.count(b"\n")
        done = {"schema": 1, "status": "completed", "test_accuracy": 0.9, "epochs_run": epochs}
        (folder / "summary.json").write_text(json.dumps(done))
    return folder


def metrics_lines(epochs: int, layers: int, *, dense: bool = False) -> bytes:
    """metrics.jsonl of `epochs` epochs with `layers` gradient norms each."""
    return b"".join(
        json.dumps(_epoch(e, layers, dense=dense), separators=(",", ":")).encode() + b"\n"
        for e in range(1, epochs + 1)
    )


def large_runs(root: Path, experiment: str, count: int, megabytes: float) -> list[str]:
    """`count` finished runs whose metrics.jsonl is about `megabytes` MB of short
    gradient-norm entries: legal, and about four times larger once parsed."""
    line = metrics_lines(1, 2000, dense=True)
    epochs = max(1, int(megabytes * 1e6 / len(line)))
    data = metrics_lines(epochs, 2000, dense=True)
    ids = [f"big{i}" for i in range(count)]
    for i, run_id in enumerate(ids):
        write_run(root, experiment, run_id, seed=i, lines=data)
    return ids


def render_runs(root: Path, experiment: str, runs: int, epochs: int = 30) -> None:
    """`runs` finished runs, one per seed: grouped by seed, a figure with a curve each."""
    data = metrics_lines(epochs, 8)
    for seed in range(runs):
        write_run(root, experiment, f"s{seed}", seed=seed, lines=data)


def unfinished_line(root: Path, experiment: str, run_id: str, nbytes: int) -> Path:
    """A running run: one epoch, then a last line of `nbytes` bytes without its newline
    (a line still being written, or a writer that never finishes it)."""
    lines = metrics_lines(1, 8) + b'{"epoch":2,"pad":"' + b"x" * nbytes
    return write_run(root, experiment, run_id, lines=lines, finished=False)


# ---------------------------------------------------------------- attacks


def render_request(experiment: str, side: int) -> pb.RenderComparisonRequest:
    """A large figure: one curve per seed, `side` x `side` pixels."""
    selection = pb.RunSelection(experiment=experiment, group_by="seed")
    return pb.RenderComparisonRequest(selection=selection, width=side, height=side)


def slow_renders(
    channel: grpc.Channel,
    request: pb.RenderComparisonRequest,
    count: int,
    timeout: float,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    started: Callable[[], None] | None = None,
) -> tuple[Outcome, list[float]]:
    """`count` RenderComparison calls at once on one channel, each with `timeout`; the
    codes they got and the seconds each took to end. `started` runs once they are sent."""
    outcome = Outcome("slow renders")
    ended: list[float] = []
    lock = threading.Lock()
    stub = pb_grpc.AnalysisServiceStub(channel)
    begin = time.monotonic()
    futures = [
        stub.RenderComparison.future(request, timeout=timeout, metadata=metadata)
        for _ in range(count)
    ]

    def done(future: grpc.Future) -> None:
        code = future.code()
        with lock:
            outcome.add(code)
            ended.append(time.monotonic() - begin)

    for future in futures:
        future.add_done_callback(done)
    if started is not None:
        started()
    for future in futures:
        with contextlib.suppress(grpc.RpcError):
            future.result(timeout + 60)
    deadline = time.monotonic() + 10
    while len(ended) < count and time.monotonic() < deadline:
        time.sleep(0.01)  # the last done-callbacks run on gRPC's thread
    outcome.seconds = time.monotonic() - begin
    return outcome, sorted(ended)


def watchers(
    address: str,
    experiment: str,
    run_id: str,
    count: int,
    hold: float,
    poll: float = 0.01,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    ca: bytes | None = None,
) -> Outcome:
    """`count` WatchRun streams of one run, each polling every `poll` s, for `hold` s (over
    TLS when `ca`, the PEM of the CA that signed the server's certificate, is given)."""
    outcome = Outcome("watchers")
    lock = threading.Lock()

    def channel_() -> grpc.Channel:
        if ca is None:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca))

    def watch() -> None:
        with channel_() as channel:
            stub = pb_grpc.AnalysisServiceStub(channel)
            request = pb.WatchRunRequest(experiment=experiment, run_id=run_id, poll_seconds=poll)
            try:
                for _ in stub.WatchRun(request, timeout=hold, metadata=metadata):
                    pass
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
        with lock:
            outcome.add(code)

    begin = time.monotonic()
    threads = [threading.Thread(target=watch, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(hold + 30)
    outcome.seconds = time.monotonic() - begin
    return outcome
