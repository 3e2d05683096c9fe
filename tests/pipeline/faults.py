"""Fault injection for the Ray tests: kill training workers, train in a thread."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from pipeline.ray_train import train_on_ray
from runstore import RunDir


def worker_pids(title: str = "RayTrainWorker") -> list[int]:
    """Live processes of this test process's Ray instance whose Ray title starts with
    `ray::TITLE` (default: the Ray Train workers). Those of other Ray instances on the
    machine (another pytest-xdist worker's, a test's own cluster, a neighbour's) are told
    apart by the TMPDIR they inherited: every test process has its own
    (tests/conftest.py)."""
    ours = b"\0TMPDIR=" + os.environ["TMPDIR"].encode() + b"\0"
    prefix = b"ray::" + title.encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if not cmdline.startswith(prefix):
                    continue
                environ = b"\0" + (entry / "environ").read_bytes()
            except OSError:
                continue
            if ours in environ:
                pids.append(int(entry.name))
    return pids


def kill_workers_when(run: RunDir, epoch: int, stop: threading.Event) -> list[int]:
    """Wait until the run has finished `epoch`, then SIGKILL its training worker processes."""
    while not stop.is_set():
        if len(run.read_metrics()) >= epoch:
            killed = []
            for pid in worker_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            if killed:
                return killed
        time.sleep(0.1)
    return []


def train_in_thread(
    cfg: object, runs: str | Path, name: str, **kwargs: object
) -> tuple[threading.Thread, dict]:
    """train_on_ray(cfg, runs=runs, experiment="ft", name=name) in a thread; `out` gets
    "result" or "error"."""
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = train_on_ray(cfg, runs=runs, experiment="ft", name=name, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out
