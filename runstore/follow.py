"""Follow a run that is being written: new whole lines of metrics.jsonl, then its summary.

One follower for every reader: `stride train`'s epoch lines, the sweep's live view
and the analysis service's WatchRun.

The writer appends whole lines and writes summary.json last (docs/formats.md), so
each poll reads summary.json *before* metrics.jsonl: once the summary is seen, the
metrics read after it are complete. Only lines that end in a newline are taken while
the run goes on; a last line without one (still being written, or torn by a crash) is
read again on the next poll, and is taken or reported as truncated only when the run
has ended.

A resumed run (a Ray worker restart, `stride train --resume`) replaces metrics.jsonl
with a shorter copy, the lines through its checkpoint's epoch, then appends the
redone epochs. The follower notices by content, the one thing every store can read:
each poll reads from the newline before the last line it took, and those bytes must
still be exactly what it took. When they are, the file continues where the follower
stands; when they are not (the file shrank, was replaced, or no longer has a line
boundary there), it is taken again from the start. An epoch already delivered is
never delivered again, so a reader gets each epoch number once, in order, with the
values the file had when it was read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from runstore.errors import MalformedRun
from runstore.records import EpochRecord, SummaryRecord, parse_epoch
from runstore.rundir import RunDir


@dataclass(frozen=True)
class Event:
    """One step of a followed run: a new epoch, a warning, or the summary that ends it."""

    epoch: EpochRecord | None = None
    summary: SummaryRecord | None = None
    warning: str | None = None


class Follower:
    """Reads what a run wrote since the last `poll()`; cheap to call often (one read of
    summary.json and one of the new part of metrics.jsonl)."""

    def __init__(self, run: RunDir, *, after_epoch: int = 0) -> None:
        self.run = run
        self.sent = after_epoch  # epochs through this one are not delivered (again)
        self.ended = False
        self._offset = 0  # end of the last whole line taken
        self._anchor = b""  # the bytes before _offset: "\n" (unless at 0) + last line + "\n"
        self._expected = 1  # the epoch the next line must have

    def poll(self) -> list[Event]:
        """New events; the last is the summary once the run has ended. Raises
        MalformedRun when a line breaks the format."""
        if self.ended:
            return []
        events: list[Event] = []
        summary = self.run.read_summary()
        start = self._offset - len(self._anchor)
        data = self.run.read_metrics_from(start)
        if data.startswith(self._anchor):
            data = data[len(self._anchor) :]
        else:  # rewritten by a resumed run: take it again from the start
            if self._expected > 1:
                events.append(
                    Event(
                        warning="metrics.jsonl was rewritten (the run resumed or restarted); "
                        f"epochs through {self.sent} are not delivered again, also where "
                        "they are redone"
                    )
                )
            self._offset, self._anchor, self._expected = 0, b"", 1
            data = self.run.read_metrics_from(0)
        end = data.rfind(b"\n") + 1
        events.extend(Event(epoch=e) for e in self._take(data[:end]) if self._new(e))
        tail = data[end:]  # a line still being written, or torn by a crash
        if summary is not None:
            if tail.strip():
                try:
                    epoch = self._parse(tail)
                except MalformedRun:
                    line = self._expected
                    events.append(
                        Event(warning=f"metrics.jsonl: truncated last line {line} skipped")
                    )
                else:
                    if self._new(epoch):
                        events.append(Event(epoch=epoch))
            events.append(Event(summary=summary))
            self.ended = True
        return events

    def _new(self, epoch: EpochRecord) -> bool:
        if epoch.epoch <= self.sent:
            return False
        self.sent = epoch.epoch
        return True

    def _take(self, whole: bytes) -> Iterator[EpochRecord]:
        """Parse whole lines (each ending in a newline), moving the cursor past each."""
        for text in whole.split(b"\n")[:-1]:
            line = text + b"\n"
            start = self._offset
            self._offset += len(line)
            if not text.strip():  # a blank line: skipped, but still part of the anchor
                self._anchor += line
                continue
            epoch = self._parse(text)
            self._expected += 1
            self._anchor = (b"\n" if start else b"") + line
            yield epoch

    def _parse(self, line: bytes) -> EpochRecord:
        epoch = parse_epoch(line, f"metrics.jsonl line {self._expected}")
        if epoch.epoch != self._expected:
            raise MalformedRun(
                f"metrics.jsonl: epoch {epoch.epoch} where epoch {self._expected} was expected"
            )
        return epoch


def follow(
    run: RunDir,
    *,
    after_epoch: int = 0,
    poll_seconds: float = 0.5,
    wait: Callable[[float], object] = time.sleep,
    active: Callable[[], bool] = lambda: True,
    deadline: float | None = None,
) -> Iterator[Event]:
    """Yield the run's events as they appear, until its summary, until `active()` turns
    False, or until `deadline` (a time.monotonic() value). `wait(seconds)` sleeps between
    polls; a server passes one that wakes early when the call is cancelled."""
    follower = Follower(run, after_epoch=after_epoch)
    while True:
        yield from follower.poll()
        if follower.ended or not active():
            return
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wait(min(poll_seconds, left))
        else:
            wait(poll_seconds)
