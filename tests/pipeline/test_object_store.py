"""The run store on an object store: S3 served by moto on localhost.

Training writes config.json, metrics.jsonl, summary.json and the checkpoints through
pyarrow.fs; Ray Train keeps its checkpoints there too (RunConfig storage_filesystem),
so a killed job resumes from S3, and export reads the run back from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.export import export_run
from pipeline.ray_train import ray_checkpoints, train_on_ray
from pipeline.run import train_local
from pipeline.search import build_plan, parse_grid
from pipeline.sweep import prepare, run_sweep
from runstore import ConfigRecord, EpochRecord, RunDir
from runstore.files import ArrowFiles
from runstore.files import open_files as open_store
from tests.pipeline.conftest import tiny_config
from tests.pipeline.faults import kill_workers_when, train_in_thread

BUCKET = "stride-runs"


@pytest.fixture(scope="module")
def s3_root() -> Iterator[str]:
    """s3://BUCKET/runs on a local moto server (credentials in the URI: moto takes any)."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    open_store(f"s3://key:secret@{BUCKET}?{options}&allow_bucket_creation=true").fs.create_dir(  # type: ignore[attr-defined]
        BUCKET
    )
    yield f"s3://key:secret@{BUCKET}/runs?{options}"
    server.stop()


def test_run_files_on_s3(s3_root: str) -> None:
    run = RunDir.create(s3_root, "files", "r1")
    assert isinstance(run.files, ArrowFiles)
    assert str(run) == f"s3://{BUCKET}/runs/files/r1" and "secret" not in str(run)
    assert (run.name, run.experiment, run.exists(), run.read_summary()) == (
        "r1",
        "files",
        False,
        None,
    )
    record = ConfigRecord(experiment="files", run_id="r1", created_at="now", config={"seed": 1})
    run.write_config(record)
    assert run.exists() and run.read_config() == record
    for epoch in (1, 2, 3):
        run.append_metrics(EpochRecord(epoch))
    assert [r.epoch for r in run.read_metrics()] == [1, 2, 3]
    run.keep_metrics_through(1)  # what a resume does before redoing epochs
    run.append_metrics(EpochRecord(2))
    assert [r.epoch for r in run.read_metrics()] == [1, 2]
    # A torn last line (a writer killed mid-upload on a store that allows it) is skipped
    # by readers and dropped by the next append.
    run.files.write_bytes("metrics.jsonl", b'{"epoch":1}\n{"epoch":2}\n{"epo')
    assert [r.epoch for r in run.read_metrics()] == [1, 2]
    run.append_metrics(EpochRecord(3))
    assert [r.epoch for r in run.read_metrics()] == [1, 2, 3]
    run.files.write_bytes("summary.json", b"[1, 2]")
    with pytest.raises(
        ValueError, match=r"s3://stride-runs/runs/files/r1: summary.json is not a JSON object"
    ):
        run.read_summary()
    run.delete_summary()
    assert run.read_summary() is None
    with pytest.raises(ValueError, match="not a local folder"):
        _ = run.path


def test_local_training_and_export_from_s3(s3_root: str, tmp_path: Path) -> None:
    cfg = tiny_config(**{"training.epochs": 2})
    run, summary = train_local(cfg, runs=s3_root, experiment="plain", name="r")
    assert summary.status == "completed"
    assert summary.test_accuracy is not None and summary.test_accuracy > 0.5
    assert [r.epoch for r in run.read_metrics()] == [1, 2]
    assert run.read_checkpoint_file("last.pt") and run.read_checkpoint_file("model.pt")
    result = export_run(RunDir.at(s3_root, "plain", "r"), tmp_path / "repo", name="digits")
    assert result.path.name == "model.onnx" and result.path.is_file()
    with pytest.raises(ValueError, match="already exists; pass --resume"):
        train_local(cfg, runs=s3_root, experiment="plain", name="r")


def test_analysis_reads_what_training_wrote_to_s3(s3_root: str) -> None:
    from runstore import RunStore

    cfg = tiny_config(**{"training.epochs": 2})
    _, summary = train_local(cfg, runs=s3_root, experiment="read", name="r")
    store = RunStore(s3_root)  # the same URI, query options included
    assert "read" in store.experiments() and "secret" not in store.root
    run = store.run("read", "r")
    assert [e.epoch for e in run.epochs] == [1, 2]
    assert run.summary is not None and run.summary.test_accuracy == summary.test_accuracy


@pytest.mark.ray
@pytest.mark.slow
def test_ray_run_on_s3_is_killed_then_resumed(ray_cluster: dict, s3_root: str) -> None:
    cfg = tiny_config(**{"training.epochs": 5, "scaling.max_failures": 0})
    run = RunDir.at(s3_root, "ft", "died")
    thread, out = train_in_thread(cfg, s3_root, "died")
    stop = threading.Event()
    killed = kill_workers_when(run, 2, stop)
    thread.join(timeout=300)
    stop.set()
    assert killed and "error" in out  # no failures allowed: the run fails
    failed = run.read_summary()
    assert failed is not None and failed.status == "failed" and failed.reason
    assert ray_checkpoints(run), "Ray persisted no checkpoint to S3"
    resumed, summary = train_on_ray(cfg, runs=s3_root, experiment="ft", name="died", resume=True)
    assert summary.status == "completed"
    assert summary.resumed_from_epoch is not None and summary.resumed_from_epoch >= 1
    assert [r.epoch for r in resumed.read_metrics()] == [1, 2, 3, 4, 5]
    assert summary.test_accuracy is not None and summary.test_accuracy > 0.8
    assert resumed.read_checkpoint_file("model.pt")


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_on_s3(ray_cluster: dict, s3_root: str) -> None:
    base = tiny_config(**{"training.epochs": 2}).to_dict()
    sweep = prepare(base, [], build_plan(parse_grid(["optimizer.name=sgd,adam"])))
    runs = run_sweep(sweep, store=s3_root, experiment="sw", max_concurrent=2)
    assert [r.state for r in runs] == ["completed", "completed"]
    for r in runs:
        stored = RunDir.at(s3_root, "sw", r.run_id)
        assert stored.read_summary() == r.summary and r.epoch == 2
        assert stored.read_config().grid == {"optimizer.name": r.label}
