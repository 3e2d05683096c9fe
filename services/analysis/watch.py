"""Follow a run that is being written: new whole lines of metrics.jsonl, then its summary.

The writer appends whole lines and writes summary.json last (docs/formats.md), so
the follower reads summary.json *before* metrics.jsonl on each poll: once the
summary is seen, the metrics read after it are complete. Only lines that end in
a newline are taken while the run goes on; a last line without one is read when
the run has ended (or reported as truncated).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.analysis.errors import MalformedRunError
from services.analysis.store import Epoch, RunStore, Summary, parse_epoch

DEFAULT_POLL_SECONDS = 0.5
MIN_POLL_SECONDS = 0.01
MAX_POLL_SECONDS = 30.0


@dataclass(frozen=True)
class Event:
    """One message of the stream: a new epoch, or the summary that ends it."""

    epoch: Epoch | None = None
    summary: Summary | None = None
    warning: str | None = None


def follow(
    store: RunStore,
    experiment: str,
    run_id: str,
    *,
    after_epoch: int = 0,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    wait: Callable[[float], object] = time.sleep,
    active: Callable[[], bool] = lambda: True,
    deadline: float | None = None,
) -> Iterator[Event]:
    """Yield the run's epochs after `after_epoch` as they appear, then its summary.

    Ends after the summary, when `active()` turns False (the call was cancelled or
    the server stops), or at `deadline` (a time.monotonic() value). `wait(seconds)`
    sleeps between polls; the server passes one that wakes early on cancellation.
    Raises RunNotFound before the first event and MalformedRunError when a line breaks
    the format.
    """
    store.run(experiment, run_id)  # RunNotFound / MalformedRunError up front
    poll = min(max(poll_seconds, MIN_POLL_SECONDS), MAX_POLL_SECONDS)
    offset = 0
    pending = b""  # bytes after the last newline read so far
    expected = 1
    while True:
        summary = store.read_summary(experiment, run_id)
        data = store.read_metrics_from(experiment, run_id, offset)
        offset += len(data)
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            epoch = _parse(line, expected)
            expected += 1
            if epoch.epoch > after_epoch:
                yield Event(epoch=epoch)
        if summary is not None:
            if pending.strip():
                try:
                    epoch = _parse(pending, expected)
                except MalformedRunError:
                    yield Event(warning=f"metrics.jsonl: truncated last line {expected} skipped")
                else:
                    if epoch.epoch > after_epoch:
                        yield Event(epoch=epoch)
            yield Event(summary=summary)
            return
        if not active() or (deadline is not None and time.monotonic() >= deadline):
            return
        wait(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))


def _parse(line: bytes, expected: int) -> Epoch:
    epoch = parse_epoch(line.decode("utf-8", errors="replace"), f"metrics.jsonl line {expected}")
    if epoch.epoch != expected:
        raise MalformedRunError(
            f"metrics.jsonl: epoch {epoch.epoch} where epoch {expected} was expected"
        )
    return epoch
