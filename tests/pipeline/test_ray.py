"""Ray Train and Tune: two workers, sweeps, a worker killed mid-run, --resume after the
job died.

All on CPU with one local Ray instance shared across the tests (2 CPUs)."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.ray_train import train_on_ray
from pipeline.run import train_local
from pipeline.search import build_plan, parse_grid
from pipeline.sweep import concurrency, prepare, run_sweep
from pipeline.sweep_results import best_run, summarise
from runstore import RunDir
from tests.pipeline.conftest import tiny_config
from tests.pipeline.faults import kill_workers_when, train_in_thread, worker_pids
from tests.pipeline.typed import not_none

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _epochs(run: RunDir) -> list[int]:
    return [int(r.epoch) for r in run.read_metrics()]


def test_two_workers_reach_the_single_process_band(ray_cluster: object, tmp_path: Path) -> None:
    cfg = tiny_config(**{"training.epochs": 8, "training.batch_size": 32})
    _, local = train_local(cfg, runs=tmp_path, experiment="band", name="local")
    two = parse_config(cfg.to_dict(), ["scaling.workers=2"])
    handler = signal.getsignal(signal.SIGINT)
    run, summary = train_on_ray(two, runs=tmp_path, experiment="band", name="two")
    assert summary.status == "completed" and summary.workers == 2
    accuracy, local_accuracy = not_none(summary.test_accuracy), not_none(local.test_accuracy)
    assert abs(accuracy - local_accuracy) < 0.04, (summary, local)
    assert _epochs(run) == list(range(1, 9))
    effective = run.read_config().effective
    assert effective["workers"] == 2 and effective["batch_size"] == 64
    assert effective["batch_size_per_worker"] == 32
    # Metrics are of the whole epoch, reduced across both workers' shards.
    first = run.read_metrics()[0]
    assert 0 < not_none(first.train_accuracy) <= 1 and not_none(first.images_per_second) > 0
    # The run's controller goes once it has ended: Ray Train's Ctrl-C handler, which
    # holds it, was replaced by the process's own again.
    assert signal.getsignal(signal.SIGINT) is handler
    deadline = time.monotonic() + 120
    while worker_pids("TrainController"):
        assert time.monotonic() < deadline, "the run's TrainController is still alive"
        time.sleep(0.2)


def test_sweep_of_two_optimizers_and_two_seeds(ray_cluster: dict, tmp_path: Path) -> None:
    base = tiny_config(**{"training.epochs": 3}).to_dict()
    sweep = prepare(base, [], build_plan(parse_grid(["optimizer.name=sgd,adam"]), seeds=2))
    staged = set(Path(tempfile.gettempdir()).glob("stride-ckpt-*"))
    limit = concurrency(sweep.variants, ray_cluster)
    runs = run_sweep(sweep, store=tmp_path, experiment="sw", max_concurrent=limit)
    assert [(r.label, r.seed) for r in runs] == [("sgd", 0), ("sgd", 1), ("adam", 0), ("adam", 1)]
    assert [r.state for r in runs] == ["completed"] * 4
    # Each trial removed its checkpoint staging folder: a long sweep does not fill /tmp.
    assert set(Path(tempfile.gettempdir()).glob("stride-ckpt-*")) <= staged
    for r in runs:
        stored = RunDir(tmp_path / "sw" / r.run_id)
        assert stored.read_summary() == r.summary
        assert stored.read_config().grid == {"optimizer.name": r.label}
        assert stored.read_config().config["seed"] == r.seed
        assert _epochs(stored) == [1, 2, 3]
    # Each trial is one run folder; Tune's own state stays in the hidden .tune folder.
    folders = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir())
    assert folders == sorted([".tune", *(r.run_id for r in runs)])
    rows = {row["label"]: row for row in summarise(runs)}
    adam = [not_none(not_none(r.summary).test_accuracy) for r in runs if r.label == "adam"]
    assert rows["adam"]["completed"] == 2
    assert rows["adam"]["test_accuracy_mean"] == pytest.approx(sum(adam) / 2)
    assert rows["adam"]["test_accuracy_std"] == pytest.approx(abs(adam[0] - adam[1]) / 2**0.5)
    best = best_run(runs)  # by validation accuracy, never by the test set
    summaries = [not_none(r.summary) for r in runs]
    accuracies = [not_none(s.val_accuracy) for s in summaries]
    assert best is not None and not_none(best.summary).val_accuracy == max(accuracies)
    assert all(0 < not_none(s.val_accuracy) <= 1 and not_none(s.val_loss) > 0 for s in summaries)
    record = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert record["best"]["run_id"] == best.run_id and len(record["trials"]) == 4
    assert record["best"]["config"]["optimizer"]["name"] == best.label


def test_a_failing_run_does_not_stop_the_sweep(ray_cluster: dict, tmp_path: Path) -> None:
    base = tiny_config(**{"training.epochs": 2, "optimizer.name": "sgd"}).to_dict()
    # SGD at lr 1e6 diverges: that run fails, the other completes.
    sweep = prepare(base, [], build_plan(parse_grid(["optimizer.lr=0.01,1000000.0"])))
    runs = run_sweep(sweep, store=tmp_path, experiment="sw", max_concurrent=2)
    states = {r.label: r.state for r in runs}
    assert states == {"0.01": "completed", "1000000.0": "failed"}
    failed = next(r for r in runs if r.state == "failed")
    summary = RunDir(tmp_path / "sw" / failed.run_id).read_summary()
    assert summary is not None and summary.status == "failed"
    assert summary.reason is not None and "diverged" in summary.reason
    assert summary.failure == "diverged"
    assert "diverged" in failed.error


def test_a_diverged_ray_run_keeps_the_summary_its_loop_wrote(
    ray_cluster: dict, tmp_path: Path
) -> None:
    """Two workers diverge; the driver gets Ray's wrapped error, and summary.json stays
    the one rank 0 wrote: `failure: "diverged"` and the epochs before it."""
    from pipeline.ray_train import RunFailedError

    diverging = {"optimizer.name": "sgd", "optimizer.lr": 1e6, "training.epochs": 3}
    cfg = tiny_config(**diverging, **{"scaling.workers": 2})
    with pytest.raises(RunFailedError, match="diverged"):
        train_on_ray(cfg, runs=tmp_path, experiment="d", name="boom")
    run = RunDir(tmp_path / "d" / "boom")
    summary = not_none(run.read_summary())
    assert summary.status == "failed" and summary.failure == "diverged"
    assert summary.workers == 2 and summary.epochs_run == len(_epochs(run))


def test_a_two_worker_trial_fits_on_two_cpus(ray_cluster: dict, tmp_path: Path) -> None:
    """A multi-worker trial drives a TorchTrainer and holds no CPU itself: both 1-CPU
    workers start on these 2 CPUs, and its epochs reach Tune (ASHA reads them)."""
    base = tiny_config(**{"training.epochs": 2, "scaling.workers": 2}).to_dict()
    sweep = prepare(base, [], build_plan([]))
    assert concurrency(sweep.variants, ray_cluster) == 1
    (run,) = run_sweep(sweep, store=tmp_path, experiment="two", max_concurrent=1)
    assert run.state == "completed" and not_none(run.summary).workers == 2
    assert run.epoch == 2  # the workers' epochs came through Tune's report callback
    assert _epochs(RunDir(tmp_path / "two" / run.run_id)) == [1, 2]


def test_killed_worker_resumes_from_checkpoint(ray_cluster: dict, tmp_path: Path) -> None:
    cfg = tiny_config(**{"training.epochs": 6, "scaling.max_failures": 2})
    thread, out = train_in_thread(cfg, tmp_path, "killed")
    stop = threading.Event()
    killed = kill_workers_when(RunDir(tmp_path / "ft" / "killed"), 2, stop)
    thread.join(timeout=300)
    stop.set()
    assert killed, "no training worker was found to kill"
    assert "error" not in out, out.get("error")
    run, summary = out["result"]
    assert summary.status == "completed"
    assert summary.resumed_from_epoch >= 1  # restarted from a checkpoint, not from scratch
    assert _epochs(run) == [1, 2, 3, 4, 5, 6]  # every epoch exactly once, in order
    assert summary.test_accuracy > 0.85


def test_resume_after_the_whole_job_died(ray_cluster: dict, tmp_path: Path) -> None:
    cfg = tiny_config(**{"training.epochs": 6, "scaling.max_failures": 0})
    thread, out = train_in_thread(cfg, tmp_path, "died")
    stop = threading.Event()
    killed = kill_workers_when(RunDir(tmp_path / "ft" / "died"), 2, stop)
    thread.join(timeout=300)
    assert killed and "error" in out  # no failures allowed: the run fails
    run = RunDir(tmp_path / "ft" / "died")
    failed = run.read_summary()
    assert failed is not None and failed.status == "failed" and failed.reason
    done_before = _epochs(run)
    assert done_before[:2] == [1, 2]
    run, summary = train_on_ray(cfg, runs=tmp_path, experiment="ft", name="died", resume=True)
    assert summary.status == "completed"
    assert summary.resumed_from_epoch is not None and summary.resumed_from_epoch >= 1
    assert _epochs(run) == [1, 2, 3, 4, 5, 6]
