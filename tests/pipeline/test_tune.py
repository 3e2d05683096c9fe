"""Sweeps on Ray Tune: random and Optuna search, ASHA stopping a hopeless trial, a sweep
resumed after its driver was SIGKILLed, and the tuned optimizer comparison.

All on CPU with the shared local Ray instance (2 CPUs); runs of 1 to 4 epochs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.search import build_plan, parse_grid, parse_space
from pipeline.sweep import prepare, run_sweep
from pipeline.tuning import TuningPlan, prepare_tuning, run_tuning
from runstore import RunDir, StoreLocation
from stride.cli import main
from tests.pipeline.conftest import tiny_config
from tests.pipeline.typed import not_none

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LR = "optimizer.lr=loguniform(1e-3,1e-1)"


def _epochs(run: RunDir) -> list[int]:
    return [int(r.epoch) for r in run.read_metrics()]


@pytest.mark.parametrize("search", ["random", "optuna"])
def test_random_and_optuna_search_write_every_trial(
    ray_cluster: dict, tmp_path: Path, search: str
) -> None:
    base = tiny_config(**{"training.epochs": 1}).to_dict()
    plan = build_plan(parse_space([LR]), search=search, samples=2, seeds=2)
    runs = run_sweep(prepare(base, [], plan), store=tmp_path, experiment=search, max_concurrent=2)
    assert len(runs) == plan.trials == 4 and all(r.state == "completed" for r in runs)
    rates = {r.seed: r.grid["optimizer.lr"] for r in runs}
    assert all(1e-3 <= r.grid["optimizer.lr"] <= 1e-1 for r in runs)
    # every sampled rate runs with seeds 0 and 1 (paired), each trial a run folder
    by_rate: dict[float, list[int]] = {}
    for r in runs:
        by_rate.setdefault(r.grid["optimizer.lr"], []).append(r.seed)
        stored = RunDir(tmp_path / search / r.run_id)
        assert stored.read_config().config["optimizer"]["lr"] == r.grid["optimizer.lr"]
        assert _epochs(stored) == [1]
    assert sorted(sorted(s) for s in by_rate.values()) == [[0, 1], [0, 1]], rates


def test_asha_stops_the_hopeless_trial(ray_cluster: dict, tmp_path: Path) -> None:
    """One trial at a time, the good rate first: at its first rung the hopeless one is
    below the good one's score and is stopped there."""
    base = tiny_config(**{"training.epochs": 3, "optimizer.name": "sgd"}).to_dict()
    plan = build_plan(parse_grid(["optimizer.lr=0.05,0.0000001"]), scheduler="asha", grace_epochs=1)
    runs = run_sweep(prepare(base, [], plan), store=tmp_path, experiment="asha", max_concurrent=1)
    good, hopeless = runs
    assert good.state == "completed" and _epochs(RunDir(tmp_path / "asha" / good.run_id)) == [
        1,
        2,
        3,
    ]
    assert hopeless.state == "stopped"
    summary = RunDir(tmp_path / "asha" / hopeless.run_id).read_summary()
    assert summary is not None
    assert summary.status == "stopped" and summary.stopped_by == "asha"
    assert summary.stopped_at_epoch == 1
    assert summary.reason is not None and "val_accuracy" in summary.reason
    assert _epochs(RunDir(tmp_path / "asha" / hopeless.run_id)) == [1]
    record = json.loads((tmp_path / "asha" / "sweep.json").read_text())
    assert [t["status"] for t in record["trials"]] == ["completed", "stopped"]


def test_a_sweep_resumes_after_its_driver_was_killed(
    ray_cluster: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(**{"training.epochs": 4}).to_dict()))
    runs = tmp_path / "runs"
    args = ["sweep", "--config", str(config), "--runs", str(runs), "--experiment", "kill"]
    args += ["--grid", "optimizer.name=sgd,adam", "--max-concurrent", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "driver.log"  # what the driver printed, for a failure's message
    with log.open("wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "stride.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the local Ray it starts is ended below
        )
    try:
        deadline = time.monotonic() + 600  # about 40 s on a quiet 2-core machine
        first: RunDir | None = None
        while time.monotonic() < deadline:  # the first trial done, the second mid-way
            folders = sorted(p for p in (runs / "kill").glob("*-s0-*") if p.is_dir())
            done = [RunDir(p) for p in folders if (p / "summary.json").exists()]
            going = [RunDir(p) for p in folders if not (p / "summary.json").exists()]
            if done and going and len(_epochs(going[0])) >= 1:
                first = done[0]
                break
            if driver.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(
                    f"the sweep ended (exit {driver.returncode}) before it could be killed:\n{tail}"
                )
            time.sleep(0.2)
        tail = log.read_text(errors="replace")[-3000:]
        assert first is not None, f"the sweep did not reach its second trial in time:\n{tail}"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the dead driver's own local Ray
    finished = (first.path / "summary.json").read_bytes()
    assert main(["sweep", "--resume", "kill", "--runs", str(runs)]) == 0
    assert "resuming 2 trials" in capsys.readouterr().err
    folders = sorted(p for p in (runs / "kill").iterdir() if not p.name.startswith("."))
    trials = [p for p in folders if p.is_dir()]
    assert len(trials) == 2  # every planned trial once
    for p in trials:
        run = RunDir(p)
        assert not_none(run.read_summary()).status == "completed"
        assert _epochs(run) == [1, 2, 3, 4]  # contiguous, each epoch once
    assert (first.path / "summary.json").read_bytes() == finished  # not run again
    resumed = next(RunDir(p) for p in trials if p != first.path).read_summary()
    assert resumed is not None
    assert resumed.resumed_from_epoch is not None and resumed.resumed_from_epoch >= 1


def test_the_tuned_comparison_tunes_on_its_seeds_and_evaluates_on_fresh_ones(
    ray_cluster: dict, tmp_path: Path
) -> None:
    base = tiny_config(**{"training.epochs": 1}).to_dict()  # seed 0
    plan = TuningPlan(
        optimizers=("sgd", "adam"), lr_low=1e-3, lr_high=0.3, trials=2, default_rates=False
    )
    store = StoreLocation.parse(tmp_path)
    sweeps = prepare_tuning(base, [], plan, store, "fair")
    result = run_tuning(base, [], plan, sweeps, store=store, experiment="fair", max_concurrent=2)
    assert set(result.tuned_lr) == {"sgd", "adam"}
    for name in ("fair-lr-sgd", "fair-lr-adam"):
        tuning = [RunDir(p) for p in (tmp_path / name).iterdir() if p.is_dir() and p.name[0] != "."]
        configs = [run.read_config().config for run in tuning]
        assert sorted(c["optimizer"]["lr"] for c in configs) == [0.001, 0.3]  # the grid
        assert {c["seed"] for c in configs} == {0}  # the tuning seed
    evaluation = [
        RunDir(p) for p in (tmp_path / "fair").iterdir() if p.is_dir() and p.name[0] != "."
    ]
    assert len(evaluation) == 2 * 5  # 2 optimizers x 5 fresh seeds
    by_optimizer: dict[str, set[int]] = {}
    for run in evaluation:
        config = run.read_config().config
        assert config["optimizer"]["lr"] == result.tuned_lr[config["optimizer"]["name"]]
        by_optimizer.setdefault(config["optimizer"]["name"], set()).add(config["seed"])
        assert not_none(run.read_summary()).status == "completed"
    assert by_optimizer == {"sgd": {1, 2, 3, 4, 5}, "adam": {1, 2, 3, 4, 5}}
    record = json.loads((tmp_path / "fair" / "tuning.json").read_text())
    assert record["tuning_seeds"] == [0] and record["evaluation_seeds"] == [1, 2, 3, 4, 5]
    assert record["search"] == "grid" and record["rates"] == [0.001, 0.3]
    assert {o: t["lr"] for o, t in record["tuned"].items()} == result.tuned_lr
    assert not (tmp_path / "fair-default").exists()
    with pytest.raises(ValueError, match="already holds a sweep"):
        prepare_tuning(base, [], plan, store, "fair")
