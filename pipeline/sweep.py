"""Sweeps on Ray Tune: a searcher proposes configurations, a scheduler may stop hopeless
trials, and every trial is one training run in the store (pipeline/tune.py).

`prepare` checks the whole search before Ray starts (every grid value and the bounds
of every distribution make a valid config, every trial fits on the cluster).
`run_sweep` builds a Tuner, shows one line per trial while it runs (`SweepView`), and
writes `sweep.json` into the experiment: the plan, every trial's outcome and the best
configuration by a validation figure. Tune's own state (the searcher, the scheduler,
trial checkpoints) lives in the experiment's hidden `.tune` folder, which
`--resume` (`run_sweep(..., resume=True)`) restores after the driver died.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from pipeline.config import ConfigError, RunConfig, parse_config
from pipeline.ray_train import check_fits, needs
from pipeline.search import (
    SweepPlan,
    check_scheduler,
    make_scheduler,
    make_searcher,
    tune_space,
)
from pipeline.spec import validate
from pipeline.streaming import data_reserve
from pipeline.sweep_results import (
    SweepRun,
    SweepView,
    best_run,
)
from pipeline.tune import (
    AXES,
    SEED,
    trainable,
    trial_config,
    trial_label,
    trial_run_id,
    trial_seed,
    trial_values,
)
from runstore import RunDir, StoreLocation, SummaryRecord, check_name, open_files, utc_now
from runstore.files import ArrowFiles, Files

TUNE_FOLDER = ".tune"  # Tune's experiment state inside the experiment (readers skip it)
SWEEP_FILE = "sweep.json"
SWEEP_SCHEMA = 1


@dataclass
class Sweep:
    """A checked sweep: the resolved base config, the plan, and its validated corners."""

    base: dict[str, Any]  # the resolved base config (overrides applied, paths absolute)
    plan: SweepPlan
    variants: list[RunConfig] = field(default_factory=list)  # grid x distribution bounds

    @property
    def base_seed(self) -> int:
        return int(self.base["seed"])

    @property
    def epochs(self) -> int:
        return max(c.training.epochs for c in self.variants)


def prepare(base: dict[str, Any], overrides: list[str], plan: SweepPlan) -> Sweep:
    """Apply overrides, then validate every grid combination with each distribution at
    its bounds; an error names the variant. Nothing touches Ray."""
    resolved = parse_config(base, overrides)
    validate(resolved)
    sweep = Sweep(resolved.to_dict(), plan)
    corners = [a.corners() for a in plan.axes]
    for values in itertools.product(*corners) if corners else [()]:
        variant = dict(zip((a.key for a in plan.axes), values, strict=True))
        try:
            cfg = trial_config(sweep.base, variant, sweep.base_seed)
            validate(cfg)
        except ValueError as exc:
            raise ConfigError(f"sweep variant {variant or '(base)'}: {exc}") from None
        sweep.variants.append(cfg)
    check_scheduler(plan, min(c.training.epochs for c in sweep.variants))
    return sweep


def concurrency(configs: list[RunConfig], resources: dict[str, float]) -> int:
    """The most trials that can train at once. Every variant must fit alone (a grid may
    vary `scaling.*`); the smallest one sets the limit, and Tune starts a trial when its
    reservation fits (a multi-worker trial's workers wait for their own group)."""
    for cfg in configs:
        check_fits(cfg, resources, "a trial")
    # Streamed data: Ray Data's tasks need CPUs that no trial holds (pipeline.streaming).
    spare = max(data_reserve(c) for c in configs)
    resources = {**resources, "CPU": resources.get("CPU", 0.0) - spare}
    smallest = min((needs(c) for c in configs), key=lambda n: n["CPU"])
    fits = min(resources.get(k, 0.0) / v for k, v in smallest.items() if v > 0)
    return max(1, math.floor(fits + 1e-9))


# ------------------------------------------------------------------ the Tune driver


class SweepTracker:
    """The driver's picture of the sweep, fed by Tune's callbacks: one SweepRun per
    trial, stopped trials' summaries, the view."""

    def __init__(
        self, sweep: Sweep, root: Files, experiment: str, store: StoreLocation, view: Any
    ) -> None:
        self.sweep, self.root, self.experiment, self.store = sweep, root, experiment, store
        self.view = view
        self.runs: dict[str, SweepRun] = {}
        self.stopped: dict[str, tuple[int, str]] = {}  # trial id -> (epoch, reason)

    def row(self, trial: Any) -> SweepRun:
        row = self.runs.get(trial.trial_id)
        if row is None:
            values = trial_values(trial.config)
            seed = trial_seed(trial.config, self.sweep.base_seed)
            row = SweepRun(
                trial_label(values),
                values,
                seed,
                trial_config(self.sweep.base, values, seed),
                trial_run_id(values, seed, trial.trial_id),
                trial_id=trial.trial_id,
            )
            self.runs[trial.trial_id] = row
            if self.view is not None:
                self.view.runs.append(row)
        return row

    def run_dir(self, row: SweepRun) -> RunDir:
        return RunDir.at(self.store, self.experiment, row.run_id)

    def started(self, trial: Any) -> None:
        row = self.row(trial)
        row.state, row.error = "running", ""
        self.refresh()

    def result(self, trial: Any, result: dict[str, Any]) -> None:
        row = self.row(trial)
        if "epoch" in result:
            row.epoch = int(result["epoch"])
        if result.get("val_accuracy") is not None:
            row.val_accuracy = float(result["val_accuracy"])
        self.refresh()

    def stop_decided(self, trial: Any, result: dict[str, Any], reason: str) -> None:
        """The scheduler stopped a trial after this result: the trial waits in its report
        and writes nothing more, so its summary is written here."""
        row = self.row(trial)
        epoch = int(result.get("epoch", row.epoch))
        self.stopped[trial.trial_id] = (epoch, reason)
        summary = SummaryRecord(
            status="stopped",
            reason=reason,
            epochs_run=epoch,
            stopped_by="asha",
            stopped_at_epoch=epoch,
            finished_at=utc_now(),
        )
        self.run_dir(row).write_summary(summary)
        row.state, row.summary, row.epoch = "stopped", summary, epoch

    def completed(self, trial: Any) -> None:
        row = self.row(trial)
        if trial.trial_id in self.stopped:
            return
        summary = self.run_dir(row).read_summary()
        row.summary = summary
        if summary is not None and summary.status == "stopped":  # stopped before a resume
            row.state = "stopped"
        elif summary is None or summary.status != "completed":
            row.state = "failed"
            row.error = summary.reason or "" if summary else "ended without summary.json"
        else:
            row.state = "completed"
            row.epoch = summary.epochs_run or row.epoch
        self.refresh()

    def failed(self, trial: Any) -> None:
        row = self.row(trial)
        run = self.run_dir(row)
        summary = run.read_summary()
        if summary is None or summary.status != "failed":
            # The trial died before it could say why (killed, out of memory).
            summary = SummaryRecord(
                status="failed", failure="error", reason=_trial_error(trial), finished_at=utc_now()
            )
            run.write_summary(summary)
        row.state, row.summary, row.error = "failed", summary, _short(summary.reason or "")
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        if self.view is not None:
            self.view.update(force=force)


# The trackers of sweeps running in this process, by Tune experiment path. Tune pickles
# its callbacks and scheduler with the experiment (tuner.pkl) and gives them back on
# restore, so they hold only this key and find the live tracker here.
_TRACKERS: dict[str, SweepTracker] = {}


class SweepCallback(tune.Callback):
    """Forwards Tune's trial events to the sweep's tracker."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _tracker(self) -> SweepTracker | None:
        return _TRACKERS.get(self.key)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if (t := self._tracker()) is not None:
            t.started(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if (t := self._tracker()) is not None:
            t.result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if (t := self._tracker()) is not None:
            t.completed(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if (t := self._tracker()) is not None:
            t.failed(trial)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if (t := self._tracker()) is not None:
            for trial in trials:  # also those a restored sweep finished before
                t.row(trial)
            t.refresh()


class RecordingASHA(AsyncHyperBandScheduler):
    """ASHA that tells the sweep which trial it stopped, at which epoch and why."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = key

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and not result.get("done_training"):
            tracker = _TRACKERS.get(self.key)
            if tracker is not None:
                value = result.get(self._metric or "")
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                reason = (
                    f"asha: {self._metric} {shown} at epoch {result.get('epoch')} was not in "
                    f"the best 1/{self._reduction_factor:g} of the trials that reached it"
                )
                tracker.stop_decided(trial, result, reason)
        return action


def _trial_error(trial: Any) -> str:
    try:
        error = trial.get_error()
    except Exception:  # the error file may be gone with the node
        error = None
    return _short(str(error)) if error is not None else "the trial ended with an error"


def _short(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "failed:" in line:
            return line[:300]
    return (lines[-1] if lines else "")[:300]


def _tune_storage(root: Files) -> dict[str, Any]:
    """Tune's storage arguments: the experiment folder on disk or on an object store."""
    local = root.local_path()
    if local is not None:
        return {"storage_path": str(local)}
    assert isinstance(root, ArrowFiles), "Tune needs a local folder or a pyarrow file system"
    return {"storage_path": root.base, "storage_filesystem": root.fs}


def _scheduler(sweep: Sweep, key: str) -> Any:
    plan = sweep.plan
    if plan.scheduler != "asha":
        return make_scheduler(plan, sweep.epochs)
    # Rungs below the last epoch only (max_t = epochs - 1): a trial that trained every
    # epoch always finishes and is tested. stop_last_trials=False for the same reason.
    return RecordingASHA(
        key,
        time_attr="epoch",
        max_t=max(plan.grace_epochs, sweep.epochs - 1),
        grace_period=plan.grace_epochs,
        reduction_factor=plan.reduction_factor,
        stop_last_trials=False,
    )


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _sweep_file(root: Files) -> dict[str, Any] | None:
    raw = root.read_bytes(SWEEP_FILE)
    return None if raw is None else json.loads(raw)


def check_new_experiment(store: StoreLocation | str | os.PathLike[str], experiment: str) -> None:
    """A new sweep does not write into an experiment that holds one already."""
    root = open_files(StoreLocation.parse(store)).child(check_name("experiment", experiment))
    if root.is_file(SWEEP_FILE) or root.is_dir(TUNE_FOLDER):
        raise ValueError(
            f"experiment {root.display} already holds a sweep; use --resume {experiment} "
            "to finish it, or another --experiment"
        )


def load_sweep(
    store: StoreLocation | str | os.PathLike[str], experiment: str
) -> tuple[Sweep, dict[str, Any]]:
    """The sweep an experiment holds (from its sweep.json), checked again, for --resume;
    also returns sweep.json's settings (select_by, max_concurrent)."""
    data = read_sweep(store, experiment)
    return prepare(data["config"], [], SweepPlan.from_dict(data["plan"])), data


def read_sweep(store: StoreLocation | str | os.PathLike[str], experiment: str) -> dict[str, Any]:
    """An experiment's sweep.json; a ValueError names what is missing."""
    root = open_files(StoreLocation.parse(store)).child(check_name("experiment", experiment))
    data = _sweep_file(root)
    if data is None or not root.is_dir(TUNE_FOLDER):
        raise ValueError(
            f"--resume: {root.display} holds no sweep to resume (no {SWEEP_FILE} or "
            f"{TUNE_FOLDER}/); start it with stride sweep --experiment {experiment}"
        )
    return data


def run_sweep(
    sweep: Sweep,
    *,
    store: StoreLocation | str | os.PathLike[str],
    experiment: str,
    max_concurrent: int,
    select_by: str = "val_accuracy",
    view: SweepView | None = None,
    resume: bool = False,
) -> list[SweepRun]:
    """Run (or, with `resume`, restore and finish) the sweep on Ray Tune; Ray must be
    initialised. Returns every trial with its outcome, in the order of the plan."""
    check_name("experiment", experiment)
    store = StoreLocation.parse(store)  # in the driver, before Ray's actors see it
    root = open_files(store).child(experiment)
    if not resume:
        check_new_experiment(store, experiment)
    storage = _tune_storage(root)
    path = f"{storage['storage_path'].rstrip('/')}/{TUNE_FOLDER}"
    job = {
        "config": sweep.base,
        "runs": store.uri,  # absolute, or a URI with its options
        "experiment": experiment,
        "base_seed": sweep.base_seed,
        "tune_path": path,  # Tune's folder: a trial looks there for newer checkpoints
    }
    tracker = SweepTracker(sweep, root, experiment, store, view)
    _TRACKERS[path] = tracker
    if view is not None:
        view.planned = sweep.plan.trials
    # Tune writes its experiment state at most this often; a driver killed in between
    # loses at most that much of Tune's bookkeeping (finished runs are never rerun:
    # their summary.json is the record).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # The run store is the log: of Tune's loggers only result.json, which its results read.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Checkpoints every epoch force a snapshot of the experiment state, which --resume
    # wants; Tune's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The live view is ours; Tune's reporter (which ignores verbose=0 in its new output
    # engine) would print into stdout, where `stride sweep --json` writes.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        if resume:
            tuner = tune.Tuner.restore(
                path,
                trainable=trainable(job),
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
                storage_filesystem=storage.get("storage_filesystem"),
            )
        else:
            _write_sweep(root, sweep, experiment, select_by, max_concurrent, [], None)
            tuner = _new_tuner(sweep, job, path, storage, max_concurrent)
        tuner.fit()
    finally:
        _TRACKERS.pop(path, None)
    runs = _collect(tracker, sweep)
    best = best_run(runs, select_by)
    _write_sweep(root, sweep, experiment, select_by, max_concurrent, runs, best)
    tracker.refresh(force=True)
    return runs


def _new_tuner(
    sweep: Sweep, job: dict[str, Any], path: str, storage: dict[str, Any], max_concurrent: int
) -> Any:
    plan = sweep.plan
    space: dict[str, Any] = {AXES: tune_space(plan)}
    if plan.search != "optuna":  # Optuna's repeats carry the seed index instead
        seeds = [sweep.base_seed + i for i in range(plan.seeds)]
        space[SEED] = tune.grid_search(seeds) if len(seeds) > 1 else seeds[0]
    samples = {"grid": 1, "random": plan.samples, "optuna": plan.samples * plan.seeds}
    return tune.Tuner(
        trainable(job),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=plan.metric,
            mode=plan.mode,
            search_alg=make_searcher(plan, sweep.base_seed, max_concurrent),
            scheduler=_scheduler(sweep, path),
            num_samples=samples[plan.search],  # max concurrency: the searcher carries it
            trial_dirname_creator=_trial_dirname,
            # A new trial reuses a finished trial's process when their resources match:
            # torch, the data and the threads are already there.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_FOLDER,
            **storage,
            callbacks=[SweepCallback(path), JsonLoggerCallback()],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=sweep.variants[0].scaling.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


def _collect(tracker: SweepTracker, sweep: Sweep) -> list[SweepRun]:
    """Every trial, in the plan's order (grid values as given, then seed); trials that
    finished before a resume are read back from their run directories."""
    runs = list(tracker.runs.values())
    for row in runs:
        if row.summary is None or row.state in ("pending", "running"):
            summary = tracker.run_dir(row).read_summary()
            if summary is not None:
                row.summary = summary
                row.state = (
                    summary.status if summary.status in ("completed", "stopped") else "failed"
                )
                row.error = row.error or (summary.reason or "" if row.state == "failed" else "")
    order = {a.key: list(a.values) for a in sweep.plan.axes if a.is_grid}
    first: dict[
        str, str
    ] = {}  # values -> the first trial id with them, so that seeds sort together
    for r in sorted(runs, key=lambda r: r.trial_id):
        first.setdefault(json.dumps(r.grid, sort_keys=True, default=str), r.trial_id)

    def key(r: SweepRun) -> tuple[Any, ...]:
        grid = tuple(
            order[k].index(v) if v in order[k] else len(order[k])
            for k, v in r.grid.items()
            if k in order
        )
        return (grid, first[json.dumps(r.grid, sort_keys=True, default=str)], r.seed)

    return sorted(runs, key=key)


def _write_sweep(
    root: Files,
    sweep: Sweep,
    experiment: str,
    select_by: str,
    max_concurrent: int,
    runs: list[SweepRun],
    best: SweepRun | None,
) -> None:
    """sweep.json: the plan (what --resume rebuilds the trainable from), each trial's
    outcome and the best configuration, chosen on validation."""
    data = {
        "schema": SWEEP_SCHEMA,
        "experiment": experiment,
        "updated_at": utc_now(),
        "finished": bool(runs),
        "plan": sweep.plan.to_dict(),
        "config": sweep.base,
        "select_by": select_by,
        "max_concurrent": max_concurrent,
        "trials": [
            {
                "run_id": r.run_id,
                "values": r.grid,
                "seed": r.seed,
                "status": r.state,
                "epochs": r.epoch,
                "val_accuracy": r.summary.val_accuracy if r.summary else None,
                "val_loss": r.summary.val_loss if r.summary else None,
                "test_accuracy": r.summary.test_accuracy if r.summary else None,
                "reason": (r.summary.reason if r.summary else None) or None,
            }
            for r in runs
        ],
        "best": None
        if best is None or best.summary is None
        else {
            "run_id": best.run_id,
            "values": best.grid,
            "seed": best.seed,
            select_by: getattr(best.summary, select_by),
            "test_accuracy": best.summary.test_accuracy,
            "config": best.cfg.to_dict(),
        },
    }
    root.write_bytes(SWEEP_FILE, json.dumps(data, indent=2, default=str).encode() + b"\n")
