"""Per model-version statistics: what ModelStatistics returns and what /metrics exposes.

Counts and cumulative nanoseconds, as in Triton: success and fail per request
(with their total duration), queue and compute times, inference count (batch
items) and execution count (model runs), and a per-batch-size breakdown.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.inference.batcher import BatchTimes


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class Snapshot:
    """A consistent copy of a version's statistics."""

    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batches: dict[int, BatchStats]
    pending: int = 0


def _copy_batch(b: BatchStats) -> BatchStats:
    return BatchStats(
        Duration(b.compute_input.count, b.compute_input.ns),
        Duration(b.compute_infer.count, b.compute_infer.ns),
        Duration(b.compute_output.count, b.compute_output.ns),
    )


class ModelStats:
    """Thread-safe accumulators for one model version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._inferences = 0
        self._executions = 0
        self._success = Duration()
        self._fail = Duration()
        self._queue = Duration()
        self._input = Duration()
        self._infer = Duration()
        self._output = Duration()
        self._batches: dict[int, BatchStats] = {}

    def record_success(self, rows: int, total_ns: int, queue_ns: int) -> None:
        with self._lock:
            self._last_ms = int(time.time() * 1000)
            self._inferences += rows
            self._success.add(total_ns)
            self._queue.add(queue_ns)

    def record_failure(self, total_ns: int) -> None:
        with self._lock:
            self._last_ms = int(time.time() * 1000)
            self._fail.add(total_ns)

    def record_batch(self, times: BatchTimes) -> None:
        """One model execution (called by the batcher's worker)."""
        with self._lock:
            self._executions += 1
            # Triton counts compute durations once per request; per execution is what we know.
            self._input.add(times.input_ns)
            self._infer.add(times.infer_ns)
            self._output.add(times.output_ns)
            per = self._batches.get(times.batch_size)
            if per is None:  # not setdefault: that builds four objects on every call
                per = self._batches[times.batch_size] = BatchStats()
            per.compute_input.add(times.input_ns)
            per.compute_infer.add(times.infer_ns)
            per.compute_output.add(times.output_ns)

    def snapshot(self, pending: int = 0) -> Snapshot:
        def copy(d: Duration) -> Duration:
            return Duration(d.count, d.ns)

        with self._lock:
            return Snapshot(
                last_inference_ms=self._last_ms,
                inference_count=self._inferences,
                execution_count=self._executions,
                success=copy(self._success),
                fail=copy(self._fail),
                queue=copy(self._queue),
                compute_input=copy(self._input),
                compute_infer=copy(self._infer),
                compute_output=copy(self._output),
                batches={size: _copy_batch(b) for size, b in sorted(self._batches.items())},
                pending=pending,
            )


# Several server processes (stride serve --workers) --------------------------------------


def snapshot_to_dict(snap: Snapshot) -> dict[str, Any]:
    """A snapshot as plain JSON values (batch sizes as text keys)."""
    out = dataclasses.asdict(snap)
    out["batches"] = {str(size): b for size, b in out["batches"].items()}
    return out


def snapshot_from_dict(data: dict[str, Any]) -> Snapshot:
    """The inverse of `snapshot_to_dict`."""

    def duration(d: dict[str, int]) -> Duration:
        return Duration(int(d["count"]), int(d["ns"]))

    return Snapshot(
        last_inference_ms=int(data["last_inference_ms"]),
        inference_count=int(data["inference_count"]),
        execution_count=int(data["execution_count"]),
        success=duration(data["success"]),
        fail=duration(data["fail"]),
        queue=duration(data["queue"]),
        compute_input=duration(data["compute_input"]),
        compute_infer=duration(data["compute_infer"]),
        compute_output=duration(data["compute_output"]),
        batches={
            int(size): BatchStats(
                duration(b["compute_input"]),
                duration(b["compute_infer"]),
                duration(b["compute_output"]),
            )
            for size, b in data["batches"].items()
        },
        pending=int(data.get("pending", 0)),
    )


def merge_snapshots(snaps: Iterable[Snapshot]) -> Snapshot:
    """One version's statistics over several processes: counts, times and pending requests
    summed (per batch size too), the last inference the latest of them."""
    total = ModelStats().snapshot()
    for snap in snaps:
        total.last_inference_ms = max(total.last_inference_ms, snap.last_inference_ms)
        total.inference_count += snap.inference_count
        total.execution_count += snap.execution_count
        total.pending += snap.pending
        for name in (
            "success",
            "fail",
            "queue",
            "compute_input",
            "compute_infer",
            "compute_output",
        ):
            mine, theirs = getattr(total, name), getattr(snap, name)
            mine.add(theirs.ns, theirs.count)
        for size, b in snap.batches.items():
            per = total.batches.setdefault(size, BatchStats())
            per.compute_input.add(b.compute_input.ns, b.compute_input.count)
            per.compute_infer.add(b.compute_infer.ns, b.compute_infer.count)
            per.compute_output.add(b.compute_output.ns, b.compute_output.count)
    total.batches = dict(sorted(total.batches.items()))
    return total
