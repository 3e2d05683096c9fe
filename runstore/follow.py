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

What a follower holds is bounded, however the files look: it reads metrics.jsonl in
pieces of READ_BYTES and hands out each epoch as it parses it (`events`), a line longer
than MAX_LINE_BYTES is an error at once (also while it is still being written), a file
over the size limit a server gives (`max_file_bytes`) is an error before it is read,
and a poll that finds metrics.jsonl unchanged (same size and modification time) reads
none of it, so a last line being written is not read again and again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from runstore.errors import MalformedRun
from runstore.records import MAX_LINE_BYTES, EpochRecord, SummaryRecord, parse_epoch
from runstore.rundir import METRICS, SUMMARY, RunDir

# One read of metrics.jsonl: room for the anchor (the last line taken) and a whole line
# of the longest kind after it.
READ_BYTES = 2 * MAX_LINE_BYTES + 4096


@dataclass(frozen=True)
class Event:
    """One step of a followed run: a new epoch, a warning, or the summary that ends it."""

    epoch: EpochRecord | None = None
    summary: SummaryRecord | None = None
    warning: str | None = None


class Follower:
    """Reads what a run wrote since the last poll; cheap to call often (a look at the
    two files' sizes, and a read of what is new)."""

    def __init__(
        self, run: RunDir, *, after_epoch: int = 0, max_file_bytes: int | None = None
    ) -> None:
        """`max_file_bytes`: a file larger than this is an error (a server passes its
        reader's limit; the trainer following its own run passes none)."""
        self.run = run
        self.sent = after_epoch  # epochs through this one are not delivered (again)
        self.ended = False
        self.max_file_bytes = max_file_bytes
        self._offset = 0  # end of the last whole line taken
        self._anchor = b""  # the bytes before _offset: "\n" (unless at 0) + last line + "\n"
        self._expected = 1  # the epoch the next line must have
        self._seen: tuple[int, int] | None = None  # metrics.jsonl when last read to its end

    def poll(self) -> list[Event]:
        """New events; the last is the summary once the run has ended. Raises
        MalformedRun when a line breaks the format."""
        return list(self.events())

    def events(self) -> Iterator[Event]:
        """`poll`'s events one at a time, as metrics.jsonl is read, for a caller that
        sends each on (a long history is never held whole)."""
        if self.ended:
            return
        summary = self._summary()
        stat = self._checked_size(METRICS)
        if stat is not None and stat == self._seen and summary is None:
            return  # nothing written since the last poll read it all
        tail = b""
        while True:
            data = self.run.read_metrics_from(self._offset - len(self._anchor), READ_BYTES)
            if data.startswith(self._anchor):
                start = len(self._anchor)
            else:  # rewritten by a resumed run: take it again from the start
                if self._expected > 1:
                    yield Event(
                        warning="metrics.jsonl was rewritten (the run resumed or restarted); "
                        f"epochs through {self.sent} are not delivered again, also where "
                        "they are redone"
                    )
                self._offset, self._anchor, self._expected = 0, b"", 1
                data = self.run.read_metrics_from(0, READ_BYTES)
                start = 0
            complete = len(data) < READ_BYTES  # read to the end of the file
            end = max(start, data.rfind(b"\n", start) + 1)  # after the last whole line
            for epoch in self._take(data, start, end):
                if self._new(epoch):
                    yield Event(epoch=epoch)
            if len(data) - end > MAX_LINE_BYTES:  # a line still being written, or cut here
                raise MalformedRun(
                    f"metrics.jsonl line {self._expected} is longer than the "
                    f"{MAX_LINE_BYTES:,} bytes a line may be"
                )
            if complete or end == start:
                tail = data[end:]  # a line still being written, or torn by a crash
                break
        self._seen = stat
        if summary is not None:
            if tail.strip():
                try:
                    epoch = self._parse(tail)
                except MalformedRun:
                    line = self._expected
                    yield Event(warning=f"metrics.jsonl: truncated last line {line} skipped")
                else:
                    if self._new(epoch):
                        yield Event(epoch=epoch)
            self.ended = True
            yield Event(summary=summary)

    def _summary(self) -> SummaryRecord | None:
        if self._checked_size(SUMMARY) is None:
            return None
        return self.run.read_summary()

    def _checked_size(self, name: str) -> tuple[int, int] | None:
        """A file's (size, mtime), None when absent; MalformedRun when over the limit."""
        stat = self.run.files.size(name)
        if stat is not None and self.max_file_bytes is not None and stat[0] > self.max_file_bytes:
            raise MalformedRun(
                f"{name} is {stat[0] / 2**20:.1f} MiB, over the reader's limit of "
                f"{self.max_file_bytes / 2**20:.1f} MiB (--max-run-file-mb)"
            )
        return stat

    def _new(self, epoch: EpochRecord) -> bool:
        if epoch.epoch <= self.sent:
            return False
        self.sent = epoch.epoch
        return True

    def _take(self, data: bytes, start: int, end: int) -> Iterator[EpochRecord]:
        """Parse the whole lines of data[start:end], moving the cursor past each (one
        line is copied at a time: the piece is not)."""
        while start < end:
            stop = data.index(b"\n", start) + 1
            line = data[start:stop]
            start = stop
            at = self._offset
            self._offset += len(line)
            if not line.strip():  # a blank line: skipped, but still part of the anchor
                self._anchor = (self._anchor + line)[-MAX_LINE_BYTES:]
                continue
            epoch = self._parse(line[:-1])
            self._expected += 1
            self._anchor = (b"\n" if at else b"") + line
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
    max_file_bytes: int | None = None,
) -> Iterator[Event]:
    """Yield the run's events as they appear, until its summary, until `active()` turns
    False, or until `deadline` (a time.monotonic() value). `wait(seconds)` sleeps between
    polls; a server passes one that wakes early when the call is cancelled."""
    follower = Follower(run, after_epoch=after_epoch, max_file_bytes=max_file_bytes)
    while True:
        yield from follower.events()
        if follower.ended or not active():
            return
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wait(min(poll_seconds, left))
        else:
            wait(poll_seconds)
