"""Store locations resolved where they enter, refused commands that leave nothing, the
sweep's choice of its best run and its resource accounting (no Ray needed here)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.config import parse_config
from pipeline.run import train_local
from pipeline.search import build_plan, parse_grid, parse_space
from pipeline.sweep import concurrency, prepare
from pipeline.sweep_results import SweepRun, best_run
from pipeline.train import LocalContext
from runstore import ConfigRecord, EpochRecord, RunDir, StoreLocation, SummaryRecord
from runstore.files import open_files as open_store
from tests.pipeline.conftest import tiny_config

# ------------------------------------------------------------------ locations


def test_a_relative_store_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert StoreLocation.parse("runs").uri == str(tmp_path / "runs")
    assert StoreLocation.parse("./a/../runs").uri == str(tmp_path / "runs")
    assert StoreLocation.parse(Path("runs")).path == tmp_path / "runs"
    assert StoreLocation.parse(f"file://{tmp_path}/x").uri == str(tmp_path / "x")
    assert StoreLocation.parse("file://localhost/x").uri == "/x"
    with pytest.raises(ValueError, match="use file:///PATH"):
        StoreLocation.parse("file://runs")  # a host, not a relative path
    # What a worker receives is already absolute, so its own directory no longer matters.
    where = StoreLocation.parse("runs")
    monkeypatch.chdir("/")
    assert open_store(where).local_path() == tmp_path / "runs"


def test_a_uri_keeps_its_options_and_hides_credentials() -> None:
    uri = "s3://key:secret@bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    loc = StoreLocation.parse(uri)
    assert loc.uri == uri and not loc.is_local
    assert str(loc) == "s3://bucket/runs"
    assert loc.child("e", "r").uri == (
        "s3://key:secret@bucket/runs/e/r?endpoint_override=127.0.0.1:9000&scheme=http"
    )
    with pytest.raises(ValueError, match="not a local folder"):
        _ = loc.path


def test_a_worker_refuses_a_relative_location() -> None:
    assert StoreLocation.from_absolute("/data/runs").path == Path("/data/runs")
    assert StoreLocation.from_absolute("s3://b/runs").uri == "s3://b/runs"
    with pytest.raises(ValueError, match="is relative"):
        StoreLocation.from_absolute("runs")
    with pytest.raises(ValueError, match="empty"):
        StoreLocation.parse("  ")


# ------------------------------------------------------------------ refused commands


def test_a_refused_resume_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no run at"):
        train_local(tiny_config(), runs=tmp_path, experiment="e", name="missing", resume=True)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_new_run_with_a_taken_name_leaves_the_old_run_alone(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "e", "taken")
    run.write_config(ConfigRecord(experiment="e", run_id="taken", created_at="", config={}))
    with pytest.raises(ValueError, match="already exists"):
        train_local(tiny_config(), runs=tmp_path, experiment="e", name="taken")
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoints", "config.json"]


def test_local_context_removes_its_staging_folder() -> None:
    remote = SimpleNamespace(local_path=None)  # a run on an object store stages locally
    ctx = LocalContext(run=remote)  # type: ignore[arg-type]
    staging = ctx._checkpoint_dir()
    assert staging is not None and staging.is_dir()
    assert Path(tempfile.gettempdir()) in staging.parents
    ctx.close()
    assert not staging.exists()


# ------------------------------------------------------------------ the sweep


def _member(label: str, **figures: float) -> SweepRun:
    done = SummaryRecord(status="completed", test_loss=0.1, **figures)  # type: ignore[arg-type]
    return SweepRun(label, {}, 0, tiny_config(), f"{label}-s0-0000", "completed", summary=done)


def test_the_best_run_is_chosen_on_validation_never_on_test() -> None:
    lucky_on_test = _member("a", val_accuracy=0.90, val_loss=0.40, test_accuracy=0.99)
    best_on_val = _member("b", val_accuracy=0.95, val_loss=0.20, test_accuracy=0.93)
    lowest_loss = _member("c", val_accuracy=0.94, val_loss=0.10, test_accuracy=0.92)
    runs = [lucky_on_test, best_on_val, lowest_loss]
    assert best_run(runs) is best_on_val
    assert best_run(runs, "val_accuracy") is best_on_val
    assert best_run(runs, "val_loss") is lowest_loss
    with pytest.raises(ValueError, match="test_accuracy"):
        best_run(runs, "test_accuracy")
    failed = _member("d", val_accuracy=1.0, val_loss=0.0, test_accuracy=1.0)
    failed.state = "failed"
    assert best_run([failed, lucky_on_test]) is lucky_on_test
    assert best_run([failed]) is None


def test_every_member_of_a_grid_that_varies_scaling_must_fit() -> None:
    base = tiny_config().to_dict()
    sweep = prepare(base, [], build_plan(parse_grid(["scaling.workers=1,4"])))
    with pytest.raises(ValueError, match=r"needs 4 CPU but the cluster has"):
        concurrency(sweep.variants, {"CPU": 2.0})
    assert concurrency(sweep.variants, {"CPU": 8.0}) == 8  # the smallest member: 1 CPU
    gpu = prepare(
        base, ["scaling.use_gpu=true"], build_plan(parse_grid(["scaling.gpus_per_worker=0.5,1"]))
    )
    assert concurrency(gpu.variants, {"CPU": 8.0, "GPU": 1.0}) == 2
    with pytest.raises(ValueError, match="GPU"):
        concurrency(gpu.variants, {"CPU": 8.0})


def test_sweep_config_errors_name_the_variant() -> None:
    base = parse_config({}).to_dict()
    with pytest.raises(ValueError, match="sweep variant"):
        prepare(base, [], build_plan(parse_grid(["training.epochs=2,-1"])))
    # a distribution is checked at its bounds: a dropout of 1.5 is refused before Ray
    with pytest.raises(ValueError, match="sweep variant"):
        prepare(
            base,
            [],
            build_plan(parse_space(["model.head.dropout=uniform(0.1,1.5)"]), search="random"),
        )


def test_an_append_after_a_torn_line_drops_it(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "e", "r")
    run.append_metrics(EpochRecord(1))
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "val_')  # the process died mid-write
    run.append_metrics(EpochRecord(2))
    text = (run.path / "metrics.jsonl").read_text()
    assert text == EpochRecord(1).to_line() + EpochRecord(2).to_line()
    torn_only = RunDir.create(tmp_path, "e", "s")
    (torn_only.path / "metrics.jsonl").write_text('{"epo')
    torn_only.append_metrics(EpochRecord(1))
    assert torn_only.read_metrics() == [EpochRecord(1)]
