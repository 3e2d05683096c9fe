"""Follow a run that is being written: new whole lines of metrics.jsonl, then its summary.

The writer appends whole lines and writes summary.json last (docs/formats.md), so
the follower reads summary.json *before* metrics.jsonl on each poll: once the
summary is seen, the metrics read after it are complete. Only lines that end in
a newline are taken while the run goes on; a last line without one (still being
written, or torn by a crash) is read again on the next poll, and is taken or
reported as truncated only when the run has ended.

A resumed run (a Ray worker restart, `stride train --resume`) replaces metrics.jsonl
with a shorter copy, the lines through its checkpoint's epoch, then appends the
redone epochs. The follower notices by content, the one thing every location can
read: each poll reads from the newline before the last line it took, and those
bytes must still be exactly what it took. When they are, the file continues
where the follower stands, whatever else was rewritten before it; when they are not
(the file shrank, was replaced, or no longer has a line boundary there), it is taken
again from the start. An epoch already sent is never sent again, so a client gets
each epoch number once, in order, with the values the file had when it was sent.
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


@dataclass
class _Cursor:
    """How much of metrics.jsonl has been taken, and the bytes that must still end it."""

    offset: int = 0  # end of the last whole line taken
    anchor: bytes = b""  # the bytes before `offset`: "\n" (unless at 0) + last line + "\n"
    expected: int = 1  # the epoch the next line must have


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

    Each epoch number is yielded once, in order, also across a resumed run's rewrite
    of metrics.jsonl (then one warning says so). Ends after the summary, when
    `active()` turns False (the call was cancelled or the server stops), or at
    `deadline` (a time.monotonic() value). `wait(seconds)` sleeps between polls; the
    server passes one that wakes early on cancellation. Raises RunNotFound before the
    first event and MalformedRunError when a line breaks the format.
    """
    store.run(experiment, run_id)  # RunNotFound / MalformedRunError up front
    poll = min(max(poll_seconds, MIN_POLL_SECONDS), MAX_POLL_SECONDS)
    cursor = _Cursor()
    sent = after_epoch  # epochs through this one are not sent (again)
    while True:
        summary = store.read_summary(experiment, run_id)
        data = _read_after(store, experiment, run_id, cursor)
        if data is None:  # rewritten by a resumed run: take it again from the start
            if cursor.expected > 1:
                yield Event(
                    warning="metrics.jsonl was rewritten (the run resumed or restarted); "
                    f"epochs through {sent} are not sent again, also where they are redone"
                )
            cursor = _Cursor()
            data = store.read_metrics_from(experiment, run_id, 0)
        end = data.rfind(b"\n") + 1
        for epoch in _take(data[:end], cursor):
            if epoch.epoch > sent:
                sent = epoch.epoch
                yield Event(epoch=epoch)
        tail = data[end:]  # a line still being written, or torn by a crash
        if summary is not None:
            if tail.strip():
                try:
                    epoch = _parse(tail, cursor.expected)
                except MalformedRunError:
                    yield Event(
                        warning=f"metrics.jsonl: truncated last line {cursor.expected} skipped"
                    )
                else:
                    if epoch.epoch > sent:
                        yield Event(epoch=epoch)
            yield Event(summary=summary)
            return
        if not active() or (deadline is not None and time.monotonic() >= deadline):
            return
        wait(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))


def _read_after(store: RunStore, experiment: str, run_id: str, cursor: _Cursor) -> bytes | None:
    """metrics.jsonl after the cursor, or None when the file no longer continues it.

    One read from the start of the anchor, so the check and the new bytes come from
    the same version of the file.
    """
    data = store.read_metrics_from(experiment, run_id, cursor.offset - len(cursor.anchor))
    if not data.startswith(cursor.anchor):
        return None
    return data[len(cursor.anchor) :]


def _take(whole: bytes, cursor: _Cursor) -> Iterator[Epoch]:
    """Parse whole lines (each ending in a newline), moving the cursor past each."""
    for text in whole.split(b"\n")[:-1]:
        line = text + b"\n"
        start = cursor.offset
        cursor.offset += len(line)
        if not text.strip():  # a blank line: skipped, but still part of the anchor
            cursor.anchor += line
            continue
        epoch = _parse(text, cursor.expected)
        cursor.expected += 1
        cursor.anchor = (b"\n" if start else b"") + line
        yield epoch


def _parse(line: bytes, expected: int) -> Epoch:
    epoch = parse_epoch(line.decode("utf-8", errors="replace"), f"metrics.jsonl line {expected}")
    if epoch.epoch != expected:
        raise MalformedRunError(
            f"metrics.jsonl: epoch {epoch.epoch} where epoch {expected} was expected"
        )
    return epoch
