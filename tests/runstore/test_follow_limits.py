"""What following a run may cost (issue 25, item 6): a follower reads nothing while
metrics.jsonl is unchanged, reads a long history in pieces and hands it out epoch by
epoch, and refuses a line over the limit and a file over the reader's size limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runstore import ConfigRecord, EpochRecord, Follower, MalformedRun, RunDir
from runstore.follow import READ_BYTES
from runstore.records import MAX_LINE_BYTES


class CountingRun(RunDir):
    """A RunDir that counts the bytes of metrics.jsonl it hands out."""

    read = 0

    def read_metrics_from(self, offset: int, length: int | None = None) -> bytes:
        data = super().read_metrics_from(offset, length)
        self.read += len(data)
        return data


def new_run(root: Path, metrics: bytes) -> CountingRun:
    RunDir.create(root, "exp", "r").write_config(ConfigRecord("exp", "r", "now", {}))
    run = CountingRun(root / "exp" / "r")
    (run.path / "metrics.jsonl").write_bytes(metrics)
    return run


def line(epoch: int, layers: int = 3) -> bytes:
    grads = tuple((f"layer{i}", 0.1) for i in range(layers))
    return EpochRecord(epoch, val_accuracy=0.5, grad_norms=grads).to_line().encode()


def test_an_unfinished_last_line_is_not_read_again_while_it_does_not_change(
    tmp_path: Path,
) -> None:
    unfinished = b'{"epoch": 2, "pad": "' + b"x" * 500_000
    run = new_run(tmp_path, line(1) + unfinished)
    follower = Follower(run)
    assert [e.epoch.epoch for e in follower.poll() if e.epoch] == [1]
    for _ in range(50):
        assert follower.poll() == []
    # Before: every poll read the 500 kB line again (25 MB in 50 polls).
    assert run.read < len(line(1)) + len(unfinished) + 1000, run.read
    with open(run.path / "metrics.jsonl", "ab") as f:
        f.write(b'"}\n')  # the line is finished: read once more, and taken
    assert [e.epoch.epoch for e in follower.poll() if e.epoch] == [2]


def test_a_last_line_over_the_limit_is_an_error_while_it_is_still_written(
    tmp_path: Path,
) -> None:
    run = new_run(tmp_path, line(1) + b'{"epoch": 2, "pad": "' + b"x" * MAX_LINE_BYTES)
    follower = Follower(run)
    with pytest.raises(MalformedRun, match="line 2 is longer than the 1,048,576 bytes"):
        follower.poll()
    assert run.read <= READ_BYTES


def test_a_file_over_the_size_limit_is_an_error_before_it_is_read(tmp_path: Path) -> None:
    run = new_run(tmp_path, b"".join(line(e) for e in range(1, 2000)))
    follower = Follower(run, max_file_bytes=2**16)
    with pytest.raises(MalformedRun, match=r"metrics.jsonl is 0.\d MiB, over the reader's limit"):
        follower.poll()
    assert run.read == 0
    (run.path / "summary.json").write_text(json.dumps({"status": "completed", "pad": "x" * 2**17}))
    with pytest.raises(MalformedRun, match=r"summary\.json is"):
        Follower(run, max_file_bytes=2**17).poll()


def test_a_long_history_is_read_in_pieces_and_handed_out_epoch_by_epoch(tmp_path: Path) -> None:
    lines = [line(e, layers=1500) for e in range(1, 201)]  # about 60 kB each, 12 MB
    run = new_run(tmp_path, b"".join(lines))
    events = Follower(run).events()
    assert next(events).epoch.epoch == 1  # type: ignore[union-attr]
    assert run.read <= READ_BYTES  # one piece, not the whole file
    rest = [e.epoch.epoch for e in events if e.epoch]
    assert rest == list(range(2, 201))  # lines across the pieces' edges arrive whole
