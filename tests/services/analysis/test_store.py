"""The tolerant run-store reader: good runs, runs in progress, and every malformed case."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runstore import BadName as InvalidName
from runstore import ExperimentNotFound, RunNotFound, RunStore, parse_metrics
from runstore import MalformedRun as MalformedRunError
from runstore.files import open_files as open_location
from services.analysis.errors import InvalidRequest
from services.analysis.store import select_runs
from tests.services.analysis.runstore import (
    epoch_line,
    run_config,
    run_id,
    summary,
    write_known_store,
    write_run,
)


def _run(root: Path, rid: str, **kwargs: object) -> Path:
    kwargs.setdefault("config", run_config("adam", 1))
    return write_run(root, "exp", rid, **kwargs)  # type: ignore[arg-type]


def test_reads_a_completed_run(known_store: Path) -> None:
    store = RunStore(str(known_store))
    assert store.experiments() == ["opt"]
    run = store.run("opt", run_id("adam", 2))
    assert run.status == "completed"
    assert run.seed == 2
    assert run.label("optimizer.name") == "adam"
    assert run.label("optimizer.lr") == "0.01"
    assert run.label("no.such.key") == "(unset)"
    assert [e.val_accuracy for e in run.epochs] == [0.6, 0.8, 0.95]
    assert run.epochs[0].grad_norms[0] == ("features.0.conv", 0.01)
    assert run.summary is not None and run.summary.test_accuracy == 0.95
    assert run.grid == {"optimizer.name": "adam"}


def test_run_in_progress_failed_and_unknown_fields(tmp_path: Path) -> None:
    _run(tmp_path, "running", epochs=[epoch_line(1, 0.5, future_field={"x": 1})])
    _run(
        tmp_path,
        "failed",
        epochs=[epoch_line(1, 0.5)],
        summary={**summary(None, 1, status="failed", reason="loss is NaN"), "new": 3},
    )
    scan = RunStore(str(tmp_path)).scan("exp")
    assert scan.malformed == ()
    by_id = {r.run_id: r for r in scan.runs}
    assert by_id["running"].status == "running"
    assert by_id["running"].summary is None
    assert by_id["failed"].status == "failed"
    assert by_id["failed"].summary is not None
    assert by_id["failed"].summary.reason == "loss is NaN"


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    folder = _run(tmp_path, "crashed", epochs=[epoch_line(1, 0.5), epoch_line(2, 0.6)])
    with open(folder / "metrics.jsonl", "a") as f:
        f.write(json.dumps(epoch_line(3, 0.7))[:40])
    run = RunStore(str(tmp_path)).run("exp", "crashed")
    assert [e.epoch for e in run.epochs] == [1, 2]
    assert run.warnings == ("metrics.jsonl: truncated last line 3 skipped",)


def test_a_whole_last_line_without_newline_is_read(tmp_path: Path) -> None:
    folder = _run(tmp_path, "r", epochs=[epoch_line(1, 0.5)])
    with open(folder / "metrics.jsonl", "a") as f:
        f.write(json.dumps(epoch_line(2, 0.7)))
    assert len(RunStore(str(tmp_path)).run("exp", "r").epochs) == 2


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "config.json").unlink(), "config.json is missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
        (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json is not a JSON object"),
        (lambda d: (d / "summary.json").write_text('{"status": "compl'), "summary.json is not"),
        (lambda d: (d / "summary.json").write_text('{"status": 3}'), "status is 3"),
        (
            lambda d: (d / "summary.json").write_text(
                '{"status": "completed", "test_accuracy": "hi"}'
            ),
            "test_accuracy is 'hi', not a number",
        ),
        (lambda d: (d / "metrics.jsonl").unlink(), "metrics.jsonl is missing"),
        (
            lambda d: (d / "metrics.jsonl").write_text('{"epoch": 1}\n{garbage\n{"epoch": 3}\n'),
            "line 2 is not valid JSON",
        ),
        (lambda d: (d / "metrics.jsonl").write_text('{"epoch": 2}\n'), "epoch 2 where epoch 1"),
        (
            lambda d: (d / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 1}\n'),
            "epoch 1 where epoch 2",
        ),
        (lambda d: (d / "metrics.jsonl").write_text('{"val_loss": 1}\n'), "has no epoch"),
        (lambda d: (d / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": "x"}\n'), "val_loss"),
        (
            lambda d: (d / "metrics.jsonl").write_text(
                '{"epoch": 1, "grad_norms": [{"norm": 1}]}\n'
            ),
            "no layer name",
        ),
        (lambda d: (d / "metrics.jsonl").write_bytes(b"\xff\xfe{}\n"), "line 1 is not valid JSON"),
    ],
)
def test_malformed_runs_are_reported_and_skipped(
    tmp_path: Path, damage: Callable[[Path], object], reason: str
) -> None:
    _run(tmp_path, "good", epochs=[epoch_line(1, 0.5)], summary=summary(0.5, 1))
    bad = _run(tmp_path, "bad", epochs=[epoch_line(1, 0.5)], summary=summary(0.5, 1))
    damage(bad)
    store = RunStore(str(tmp_path))
    scan = store.scan("exp")
    assert [r.run_id for r in scan.runs] == ["good"]
    assert len(scan.malformed) == 1
    assert scan.malformed[0].run_id == "bad"
    assert reason in scan.malformed[0].reason
    assert scan.malformed[0].reason.startswith("malformed: ")
    with pytest.raises(MalformedRunError, match="'bad' of 'exp' is malformed"):
        store.run("exp", "bad")


def test_hidden_folders_are_ignored_and_bad_names_reported(tmp_path: Path) -> None:
    _run(tmp_path, "good", epochs=[epoch_line(1, 0.5)])
    (tmp_path / "exp" / ".tmp-123").mkdir()
    (tmp_path / "exp" / "-dash").mkdir()
    (tmp_path / "exp" / "notes.txt").write_text("a file, not a run")
    scan = RunStore(str(tmp_path)).scan("exp")
    assert [r.run_id for r in scan.runs] == ["good"]
    assert [(m.run_id, "not a valid run id" in m.reason) for m in scan.malformed] == [
        ("-dash", True)
    ]


def test_a_folder_without_files_yet_is_a_starting_run(tmp_path: Path) -> None:
    (tmp_path / "exp" / "new" / "checkpoints").mkdir(parents=True)
    scan = RunStore(str(tmp_path)).scan("exp")
    assert scan.malformed == ()
    [run] = scan.runs
    assert (run.status, run.epochs, run.warnings) == (
        "running",
        (),
        ("starting: no config.json yet",),
    )


def test_a_run_that_failed_before_writing_its_config_is_failed(tmp_path: Path) -> None:
    folder = tmp_path / "exp" / "lost"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "summary.json").write_text(
        json.dumps({"status": "failed", "reason": "worker died", "test_accuracy": None})
    )
    [run] = RunStore(str(tmp_path)).scan("exp").runs
    assert (run.status, run.epochs, run.summary and run.summary.reason) == (
        "failed",
        (),
        "worker died",
    )
    (folder / "summary.json").write_text('{"status": "completed"}')
    assert RunStore(str(tmp_path)).scan("exp").malformed[0].reason == (
        "malformed: config.json is missing"
    )


def test_a_running_run_may_have_no_metrics_yet(tmp_path: Path) -> None:
    folder = _run(tmp_path, "starting")
    (folder / "metrics.jsonl").unlink()
    run = RunStore(str(tmp_path)).run("exp", "starting")
    assert (run.status, run.epochs) == ("running", ())


def test_never_unpickles(tmp_path: Path) -> None:
    import pickle

    folder = _run(tmp_path, "r", epochs=[epoch_line(1, 0.5)])
    (folder / "checkpoints").mkdir()
    # A pickle that would raise if it were ever loaded.
    payload = pickle.dumps(Exception("unpickled"))
    (folder / "checkpoints" / "last.pt").write_bytes(payload)
    (folder / "metrics.pkl").write_bytes(payload)
    assert RunStore(str(tmp_path)).run("exp", "r").epochs[0].epoch == 1


def test_not_found_errors_name_what_exists(known_store: Path) -> None:
    store = RunStore(str(known_store))
    with pytest.raises(ExperimentNotFound, match="'nope' not found in the run store") as error:
        store.scan("nope")
    # Neither the other experiments nor the store's path are disclosed to a caller.
    assert "opt" not in str(error.value) and str(known_store) not in str(error.value)
    with pytest.raises(ExperimentNotFound):
        store.run("nope", "x")
    with pytest.raises(RunNotFound, match="'x' not found in experiment 'opt'"):
        store.run("opt", "x")
    with pytest.raises(InvalidName, match="not a valid name"):
        store.run("opt", "../opt")


def test_parse_metrics_ignores_blank_lines() -> None:
    epochs, warnings = parse_metrics(b'{"epoch": 1}\n\n{"epoch": 2}\n')
    assert [e.epoch for e in epochs] == [1, 2] and warnings == []


def test_select_runs_by_status_and_config(known_store: Path) -> None:
    runs = RunStore(str(known_store)).scan("opt").runs
    assert len(select_runs(runs, statuses=["completed"], where=["optimizer.name=sgd"])) == 3
    assert len(select_runs(runs, where=["seed=2"])) == 2
    assert select_runs(runs, statuses=["running"]) == []
    with pytest.raises(InvalidRequest, match="allowed: completed, failed, stopped, running"):
        select_runs(runs, statuses=["done"])
    with pytest.raises(InvalidRequest, match="KEY=VALUE"):
        select_runs(runs, where=["seed"])


def test_file_uri_and_fsspec_uri_read_the_same_store(known_store: Path) -> None:
    fsspec = pytest.importorskip("fsspec")

    uri_store = RunStore(known_store.as_uri())
    assert len(uri_store.scan("opt").runs) == 6
    memory = fsspec.filesystem("memory")
    for path in known_store.rglob("*"):
        if path.is_file():
            memory.pipe(
                f"/stride-test/{path.relative_to(known_store).as_posix()}", path.read_bytes()
            )
    try:
        mem_store = RunStore("memory://stride-test")
        scan = mem_store.scan("opt")
        assert len(scan.runs) == 6 and scan.malformed == ()
        run = mem_store.run("opt", run_id("sgd", 3))
        assert [e.val_accuracy for e in run.epochs] == [0.2, 0.6, 0.94]
        assert (
            mem_store.run_dir("opt", run_id("sgd", 3)).read_metrics_from(10)[:5]
            == ((known_store / "opt" / run_id("sgd", 3) / "metrics.jsonl").read_bytes()[10:15])
        )
    finally:
        memory.rm("/stride-test", recursive=True)


def test_unreadable_uris_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="file:///PATH"):
        open_location("file://otherhost/runs")
    with pytest.raises(ValueError, match="nosuchscheme"):
        open_location("nosuchscheme://bucket/runs")


def test_other_schemes_without_fsspec_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec -> ImportError
    with pytest.raises(ValueError, match=r"gdrive:// is not a file system pyarrow can") as error:
        open_location("gdrive://user:secret@folder/runs")
    assert "fsspec (with its plug-in)" in str(error.value) and "secret" not in str(error.value)
    assert open_location("file:///tmp").display == "/tmp"


def test_missing_root_has_no_experiments(tmp_path: Path) -> None:
    assert RunStore(str(tmp_path / "absent")).experiments() == []
    write_known_store(tmp_path / "r")
    assert RunStore(str(tmp_path / "r")).experiments() == ["opt"]
