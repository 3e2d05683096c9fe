"""WatchRun across a resumed run (issue 10) and a torn last line of metrics.jsonl.

A resumed run replaces metrics.jsonl atomically with the lines through its checkpoint's
epoch (runstore/rundir.py, `keep_metrics_through`) and appends the redone epochs. The
stream must send each epoch number once, in order, and end normally at the summary.
Most tests drive the follower (runstore.follow, through WatchRun's `watch`) with a
scripted `wait`, so each poll sees a known file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from runstore import Event, RunStore, StoreLocation, parse_epoch
from runstore.files import ArrowFiles, Files, LocalFiles
from services.analysis.errors import InvalidRequest
from services.analysis.servicer import AnalysisServicer
from services.analysis.watch import watch
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from tests.services.analysis.conftest import FakeContext
from tests.services.analysis.runstore import epoch_line, run_config, summary, write_run

FIRST = {1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8}  # the first attempt's val accuracy per epoch
REDONE = {3: 0.75, 4: 0.85, 5: 0.9, 6: 0.95}  # the resumed attempt's


def line(epoch: int, accuracy: float) -> bytes:
    """One metrics.jsonl line as the trainer writes it."""
    return (json.dumps(epoch_line(epoch, accuracy), separators=(",", ":")) + "\n").encode()


def lines(accuracies: dict[int, float]) -> bytes:
    return b"".join(line(e, a) for e, a in accuracies.items())


def replace(path: Path, data: bytes) -> None:
    """Write a file the way the trainer does: a temporary name, then an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def finish(folder: Path, epochs: int, status: str = "completed") -> None:
    (folder / "summary.json").write_text(json.dumps(summary(0.9, epochs, status=status)))


def new_run(root: Path, metrics: bytes) -> Path:
    folder = write_run(root, "live", "r", config=run_config("adam", 1))
    replace(folder / "metrics.jsonl", metrics)
    return folder


Step = Callable[[], object]


def scripted(store: RunStore, steps: Sequence[Step], *, after_epoch: int = 0) -> list[Event]:
    """All events of `watch`, running the next step of `steps` at each wait between polls."""
    pending = iter(steps)

    def wait(_: float) -> None:
        next(pending)()  # StopIteration here means the stream polled more than expected

    return list(watch(store, "live", "r", wait=wait, after_epoch=after_epoch))


def both(first: Step, second: Step) -> Step:
    """One step of two actions, in order."""

    def step() -> None:
        first()
        second()

    return step


def epochs_of(events: list[Event]) -> list[tuple[int, float | None]]:
    return [(e.epoch.epoch, e.epoch.val_accuracy) for e in events if e.epoch is not None]


def warnings_of(events: list[Event]) -> list[str]:
    return [e.warning for e in events if e.warning is not None]


def test_watch_run_across_a_resume_sends_each_epoch_once(tmp_path: Path) -> None:
    """The issue's case: 1..4 sent, then the file is rewritten to 1..2 and 3..6 appended."""
    folder = new_run(tmp_path, lines(FIRST))
    servicer = AnalysisServicer(RunStore(str(tmp_path)))
    request = pb.WatchRunRequest(experiment="live", run_id="r", poll_seconds=0.01)
    stream = servicer.WatchRun(request, FakeContext(10))
    first = [next(stream) for _ in range(4)]  # the stream waits inside its first poll
    metrics = folder / "metrics.jsonl"
    replace(metrics, lines({1: FIRST[1], 2: FIRST[2]}))  # keep_metrics_through(2)
    append(metrics, lines(REDONE))
    finish(folder, 6)
    events = first + list(stream)

    sent = [e for e in events if e.WhichOneof("event") == "epoch"]
    assert [e.epoch.epoch for e in sent] == [1, 2, 3, 4, 5, 6]
    # 3 and 4 keep the values they were sent with; 5 and 6 are the resumed run's
    assert [e.epoch.val_accuracy for e in sent] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    assert events[-1].WhichOneof("event") == "summary"
    assert events[-1].summary.status == "completed"
    [warned] = [w for e in events for w in e.warnings]
    assert "rewritten" in warned and "epochs through 4 are not delivered again" in warned


def _arrow_store(tmp_path: Path) -> tuple[RunStore, Callable[[bytes], None], Callable[[], None]]:
    """A run on pyarrow's in-memory file system, which (like S3) refuses to seek past the end."""
    fs = pytest.importorskip("pyarrow.fs")._MockFileSystem()
    fs.create_dir("bucket/live/r")

    def put(name: str, data: bytes) -> None:  # an object is put whole, never appended to
        with fs.open_output_stream(f"bucket/live/r/{name}") as f:
            f.write(data)

    def done() -> None:
        put("summary.json", json.dumps(summary(0.9, 6)).encode())

    put("config.json", json.dumps({"config": run_config("adam", 1)}).encode())
    location: Files = ArrowFiles(fs, "bucket", StoreLocation("mock://bucket"))
    return RunStore(location), lambda data: put("metrics.jsonl", data), done


def _local_store(tmp_path: Path) -> tuple[RunStore, Callable[[bytes], None], Callable[[], None]]:
    folder = new_run(tmp_path, b"")
    return (
        RunStore(LocalFiles(tmp_path)),
        lambda data: replace(folder / "metrics.jsonl", data),
        lambda: finish(folder, 6),
    )


@pytest.mark.parametrize("make_store", [_local_store, _arrow_store], ids=["local", "object"])
def test_watch_sees_the_file_shrink_while_the_run_goes_on(
    tmp_path: Path,
    make_store: Callable[[Path], tuple[RunStore, Callable[[bytes], None], Callable[[], None]]],
) -> None:
    """Polls between the rewrite and the redone epochs see a shorter file: not an error."""
    store, write_metrics, done = make_store(tmp_path)
    write_metrics(lines(FIRST))
    kept = lines({1: FIRST[1], 2: FIRST[2]})
    redone = {e: REDONE[e] for e in (3, 4, 5)}
    steps = [
        lambda: write_metrics(kept),  # resumed from the epoch 2 checkpoint
        lambda: write_metrics(kept + lines({3: REDONE[3]})),  # still behind what was sent
        lambda: write_metrics(kept + lines(redone)),
        both(lambda: write_metrics(kept + lines(REDONE)), done),
    ]
    events = scripted(store, steps)
    assert epochs_of(events) == [(1, 0.5), (2, 0.6), (3, 0.7), (4, 0.8), (5, 0.9), (6, 0.95)]
    assert len(warnings_of(events)) == 1
    assert events[-1].summary is not None and events[-1].summary.status == "completed"


def test_watch_across_a_restart_from_scratch(tmp_path: Path) -> None:
    """Without a checkpoint the trainer empties metrics.jsonl and starts again at epoch 1."""
    folder = new_run(tmp_path, lines({1: 0.5, 2: 0.6}))
    metrics = folder / "metrics.jsonl"
    steps = [
        lambda: replace(metrics, b""),  # keep_metrics_through(0)
        lambda: append(metrics, lines({1: 0.1})),
        both(lambda: append(metrics, lines({2: 0.2, 3: 0.3})), lambda: finish(folder, 3)),
    ]
    events = scripted(RunStore(str(tmp_path)), steps)
    assert epochs_of(events) == [(1, 0.5), (2, 0.6), (3, 0.3)]
    assert events[-1].summary is not None


def test_a_resume_at_the_last_epoch_sent_is_read_on(tmp_path: Path) -> None:
    """A rewrite that keeps every line sent, byte for byte, continues without a warning."""
    folder = new_run(tmp_path, lines(FIRST))
    metrics = folder / "metrics.jsonl"
    steps = [
        lambda: replace(metrics, lines(FIRST)),  # keep_metrics_through(4): same bytes, new file
        both(lambda: append(metrics, lines({5: 0.9})), lambda: finish(folder, 5)),
    ]
    events = scripted(RunStore(str(tmp_path)), steps)
    assert [e for e, _ in epochs_of(events)] == [1, 2, 3, 4, 5]
    assert warnings_of(events) == []


def test_after_epoch_holds_across_a_rewrite(tmp_path: Path) -> None:
    folder = new_run(tmp_path, lines(FIRST))
    metrics = folder / "metrics.jsonl"
    steps = [
        both(
            lambda: replace(metrics, lines({1: 0.5}) + lines({2: 0.65} | REDONE)),
            lambda: finish(folder, 6),
        )
    ]
    events = scripted(RunStore(str(tmp_path)), steps, after_epoch=3)
    assert epochs_of(events) == [(4, 0.8), (5, 0.9), (6, 0.95)]


def torn(epoch: int, accuracy: float) -> bytes:
    """The start of a line, as a crash in the middle of its write leaves it."""
    return line(epoch, accuracy)[:40]


def test_a_torn_last_line_is_dropped_by_the_resume(tmp_path: Path) -> None:
    """A crash tore epoch 3's line; the resumed run rewrites the file and redoes epoch 3."""
    folder = new_run(tmp_path, lines({1: 0.5, 2: 0.6}) + torn(3, FIRST[3]))
    assert not line(3, REDONE[3]).startswith(torn(3, FIRST[3]))  # the redone line differs
    metrics = folder / "metrics.jsonl"
    redone = lines({3: REDONE[3], 4: REDONE[4]})
    steps = [
        lambda: None,  # a poll that sees the torn line and waits
        lambda: replace(metrics, lines({1: 0.5, 2: 0.6})),  # keep_metrics_through(2)
        both(lambda: append(metrics, redone), lambda: finish(folder, 4)),
    ]
    events = scripted(RunStore(str(tmp_path)), steps)
    final = (lines({1: 0.5, 2: 0.6}) + redone).decode().splitlines()
    # whole records: not the torn start of the first epoch 3 glued to the rest of the redone one
    assert [e.epoch for e in events if e.epoch] == [parse_epoch(t, "line") for t in final]
    assert warnings_of(events) == []
    assert events[-1].summary is not None and events[-1].summary.status == "completed"


def test_a_torn_last_line_of_a_failed_run_is_skipped_with_a_warning(tmp_path: Path) -> None:
    folder = new_run(tmp_path, lines({1: 0.5, 2: 0.6}) + torn(3, 0.7))
    steps = [lambda: finish(folder, 2, status="failed")]
    events = scripted(RunStore(str(tmp_path)), steps)
    assert epochs_of(events) == [(1, 0.5), (2, 0.6)]
    assert warnings_of(events) == ["metrics.jsonl: truncated last line 3 skipped"]
    assert events[-1].summary is not None and events[-1].summary.status == "failed"


def test_a_line_written_in_two_parts_is_sent_once_whole(tmp_path: Path) -> None:
    whole = line(3, 0.7)
    folder = new_run(tmp_path, lines({1: 0.5, 2: 0.6}) + whole[:30])
    metrics = folder / "metrics.jsonl"
    steps = [both(lambda: append(metrics, whole[30:]), lambda: finish(folder, 3))]
    assert epochs_of(scripted(RunStore(str(tmp_path)), steps)) == [(1, 0.5), (2, 0.6), (3, 0.7)]


def test_reading_past_the_end_of_an_object_is_empty(tmp_path: Path) -> None:
    store, write_metrics, _ = _arrow_store(tmp_path)
    write_metrics(b"0123456789\n")
    run = store.run_dir("live", "r")
    assert run.read_metrics_from(4) == b"456789\n"
    assert run.read_metrics_from(100) == b""


@pytest.mark.parametrize("poll", [float("nan"), float("inf"), -1.0])
def test_a_poll_interval_that_is_not_a_finite_number_is_refused(
    tmp_path: Path, poll: float
) -> None:
    # NaN passed the old clamp and became wait(0): one stream burned a core.
    new_run(tmp_path, lines({1: 0.5}))
    servicer = AnalysisServicer(RunStore(str(tmp_path)))
    request = pb.WatchRunRequest(experiment="live", run_id="r", poll_seconds=poll)
    with pytest.raises(InvalidRequest, match="poll_seconds"):
        next(servicer.WatchRun(request, FakeContext(10)))


def test_close_ends_a_waiting_stream_at_once(tmp_path: Path) -> None:
    import threading
    import time

    new_run(tmp_path, lines({1: 0.5}))
    servicer = AnalysisServicer(RunStore(str(tmp_path)))
    request = pb.WatchRunRequest(experiment="live", run_id="r", poll_seconds=30)
    stream = servicer.WatchRun(request, FakeContext(60))
    assert next(stream).epoch.epoch == 1  # the stream now waits 30 s for its next poll
    rest: list[object] = []
    reader = threading.Thread(target=lambda: rest.extend(stream))
    reader.start()
    time.sleep(0.2)
    start = time.monotonic()
    servicer.close()
    reader.join(timeout=5)
    assert not reader.is_alive() and time.monotonic() - start < 2
    assert rest == []
