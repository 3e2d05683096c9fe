"""What one run can do to a reader: huge numbers, links out of the store, pipes, files
over the size limit. Each is listed as malformed and never fails a call about others;
parsed runs are cached until a file changes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from runstore import ConfigRecord, EpochRecord, MalformedRun, RunDir, RunStore, SummaryRecord


def good_run(root: Path, name: str) -> RunDir:
    run = RunDir.create(root, "exp", name)
    run.write_config(ConfigRecord("exp", name, "now", {"seed": 0}))
    run.append_metrics(EpochRecord(1, val_accuracy=0.5))
    run.write_summary(SummaryRecord("completed", test_accuracy=0.5))
    return run


def test_an_integer_of_5000_digits_is_one_malformed_run(tmp_path: Path) -> None:
    good_run(tmp_path, "good")
    bad = good_run(tmp_path, "bad")
    (bad.path / "summary.json").write_text(
        '{"status": "completed", "epochs_run": ' + "9" * 5000 + "}"
    )
    scan = RunStore(tmp_path).scan("exp")
    assert [r.run_id for r in scan.runs] == ["good"]
    [skipped] = scan.malformed
    assert skipped.run_id == "bad" and "summary.json is not valid JSON" in skipped.reason
    assert len(skipped.reason) < 400  # the message does not echo the 5,000 digits


def test_a_symlink_out_of_the_store_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps({"config": {"secret": "x"}}))
    store = tmp_path / "store"
    good_run(store, "good")
    evil = RunDir.create(store, "exp", "evil").path
    os.symlink(outside / "config.json", evil / "config.json")
    os.symlink(outside, store / "exp" / "linked")  # a whole run folder pointing out
    scan = RunStore(store).scan("exp")
    assert [r.run_id for r in scan.runs] == ["good"]
    assert all("secret" not in str(r.config) for r in scan.runs)
    with pytest.raises(MalformedRun):
        RunStore(store).run("exp", "evil")


def test_a_fifo_named_metrics_jsonl_does_not_block(tmp_path: Path) -> None:
    good_run(tmp_path, "good")
    run = RunDir.create(tmp_path, "exp", "pipe")
    run.write_config(ConfigRecord("exp", "pipe", "now", {}))
    os.mkfifo(run.path / "metrics.jsonl")
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(RunStore(tmp_path).scan("exp")))
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive(), "the reader blocked on a FIFO"
    scan = result[0]
    assert [r.run_id for r in scan.runs] == ["good"]  # type: ignore[attr-defined]
    assert "not a regular file" in scan.malformed[0].reason  # type: ignore[attr-defined]


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    run = good_run(tmp_path, "big")
    line = EpochRecord(1).to_line()
    (run.path / "metrics.jsonl").write_text(line + " " * (2 * 2**20) + "\n")
    store = RunStore(tmp_path, max_file_bytes=2**20)
    [skipped] = store.scan("exp").malformed
    assert "over the reader's limit of 1.0 MiB" in skipped.reason


def test_parsed_runs_are_cached_until_a_file_changes(tmp_path: Path) -> None:
    run = good_run(tmp_path, "r")
    store = RunStore(tmp_path)
    first = store.run("exp", "r")
    assert store.run("exp", "r") is first  # nothing changed: the same parsed run
    run.append_metrics(EpochRecord(2, val_accuracy=0.7))
    second = store.run("exp", "r")
    assert second is not first and [e.epoch for e in second.epochs] == [1, 2]
