"""Sweeps: the Cartesian product of grid values and seeds, run as concurrent Ray Train
runs, as many at once as the cluster's CPUs and GPUs allow.

Each run is launched by a small Ray task that calls `train_on_ray`; the driver
follows every run through its metrics.jsonl (the run store is the source of
truth), shows one line per run, and ends with a table per grid value: mean and
spread of test accuracy over seeds, epochs run, wall time. A failing run is
reported as failed and does not stop the others.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from pipeline.config import ConfigError, RunConfig, parse_config
from pipeline.spec import validate
from pipeline.tables import format_table as text_table
from runstore import Follower, RunDir, StoreLocation, SummaryRecord, check_name, open_files
from runstore.files import Files


@dataclass
class SweepRun:
    """One member of a sweep: its grid values, seed, config and what became of it."""

    label: str  # the grid values, e.g. "adam"
    grid: dict[str, Any]
    seed: int
    cfg: RunConfig
    run_id: str
    state: str = "pending"  # pending, running, completed, failed
    epoch: int = 0
    val_accuracy: float | None = None
    summary: SummaryRecord | None = None
    error: str = ""
    follower: Follower | None = None  # reads its epochs while it runs


def parse_grid(items: list[str]) -> list[tuple[str, list[Any]]]:
    """`key=v1,v2,...` items -> [(key, [values])]; values are read as YAML (0.1, true, adam)."""
    axes: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or not raw:
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2 (e.g. optimizer.name=sgd,adam)")
        if any(key == k for k, _ in axes):
            raise ConfigError(f"--grid: {key} is given twice")
        values = [yaml.safe_load(v) if v.strip() else "" for v in raw.split(",")]
        axes.append((key, values))
    return axes


def _slug(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9.-]+", "-", str(value)).strip("-.")
    return text or "x"


def expand(
    base: dict[str, Any], overrides: list[str], axes: list[tuple[str, list[Any]]], seeds: int
) -> list[SweepRun]:
    """Every (grid values, seed) combination as a validated config; errors name the variant."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    base_seed = parse_config(base, overrides).seed
    keys = [k for k, _ in axes]
    runs = []
    for values in itertools.product(*(v for _, v in axes)) if axes else [()]:
        grid = dict(zip(keys, values, strict=True))
        label = "_".join(_slug(v) for v in values)[:80] or "run"
        for i in range(seeds):
            seed = base_seed + i
            items = [
                *overrides,
                *(f"{k}={yaml.safe_dump(v).strip()}" for k, v in grid.items()),
                f"seed={seed}",
            ]
            try:
                cfg = parse_config(base, items)
                validate(cfg)
            except ValueError as exc:
                raise ConfigError(f"sweep variant {grid or '(base)'} seed {seed}: {exc}") from None
            run_id = check_name("run id", f"{label}-s{seed}-{secrets.token_hex(2)}")
            runs.append(SweepRun(label, grid, seed, cfg, run_id))
    return runs


def needs(cfg: RunConfig) -> dict[str, float]:
    """The CPUs and GPUs one run takes while it trains (all its workers)."""
    s = cfg.scaling
    need = {"CPU": s.workers * s.cpus_per_worker}
    if s.use_gpu:
        need["GPU"] = s.workers * s.gpus_per_worker
    return need


def _fits(need: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(k, 0.0) + 1e-9 >= v for k, v in need.items())


def concurrency(runs: list[SweepRun], resources: dict[str, float]) -> int:
    """The most runs that can train at once on the cluster. Every run must fit alone (a
    grid may vary `scaling.*`, so each is checked); runs are then started while their
    needs fit in what the running ones leave free (`run_sweep`)."""
    for r in runs:
        need = needs(r.cfg)
        if not _fits(need, resources):
            wanted = " and ".join(f"{v:g} {k}" for k, v in need.items())
            raise ValueError(
                f"run {r.run_id} needs {wanted} but the cluster has {resources}; lower "
                "scaling.workers / scaling.cpus_per_worker or add nodes"
            )
    smallest = min((needs(r.cfg) for r in runs), key=lambda n: n["CPU"])
    fits = min(resources.get(k, 0.0) / v for k, v in smallest.items() if v > 0)
    return max(1, math.floor(fits + 1e-9))


def _launch(
    cfg_dict: dict[str, Any], runs: str, experiment: str, run_id: str, grid: dict[str, Any]
) -> SummaryRecord:
    """Runs inside a Ray task (in Ray's working directory, not the user's): one
    TorchTrainer run; returns its summary."""
    from pipeline.ray_train import train_on_ray

    _, summary = train_on_ray(
        parse_config(cfg_dict),
        runs=StoreLocation.from_absolute(runs),
        experiment=experiment,
        name=run_id,
        grid=grid,
    )
    return summary


class SweepView:
    """One line per run. On a terminal the block is redrawn in place; in a log, a line
    is printed when a run changes state, and a progress line every `every` seconds."""

    def __init__(
        self, runs: list[SweepRun], stream: TextIO = sys.stderr, every: float = 15.0
    ) -> None:
        self.runs, self.stream, self.every = runs, stream, every
        self.tty = stream.isatty()
        self.drawn = 0
        self.last_states: dict[str, str] = {}
        self.last_progress = time.monotonic()

    def line(self, r: SweepRun) -> str:
        epochs = r.cfg.training.epochs
        acc = f"val acc {r.val_accuracy:.4f}" if r.val_accuracy is not None else ""
        if r.state == "completed" and r.summary is not None:
            acc = f"val acc {r.summary.val_accuracy or 0:.4f}"
        tail = f"  {r.error}" if r.error else ""
        return f"{r.run_id:<40} {r.state:<9} epoch {r.epoch:>3}/{epochs:<3} {acc}{tail}"

    def update(self, force: bool = False) -> None:
        if self.tty:
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F")
            for r in self.runs:
                self.stream.write("\x1b[2K" + self.line(r) + "\n")
            self.drawn = len(self.runs)
        else:
            for r in self.runs:
                if self.last_states.get(r.run_id) != r.state:
                    self.last_states[r.run_id] = r.state
                    if r.state != "pending":
                        self.stream.write(self.line(r) + "\n")
            now = time.monotonic()
            if force or now - self.last_progress >= self.every:
                self.last_progress = now
                done = sum(r.state in ("completed", "failed") for r in self.runs)
                running = [r for r in self.runs if r.state == "running"]
                self.stream.write(
                    f"[sweep] {done}/{len(self.runs)} done, {len(running)} running"
                    + "".join(f", {r.label} s{r.seed} epoch {r.epoch}" for r in running)
                    + "\n"
                )
        self.stream.flush()


def _poll(run: SweepRun, root: Files) -> None:
    """Bring a member's epoch and validation accuracy up to date from its metrics.jsonl."""
    if run.follower is None:
        run.follower = Follower(RunDir(root.child(run.run_id)))
    for event in run.follower.poll():
        if event.epoch is not None:
            run.epoch = event.epoch.epoch
            run.val_accuracy = event.epoch.val_accuracy


def run_sweep(
    runs: list[SweepRun],
    *,
    store: StoreLocation | str | os.PathLike[str],
    experiment: str,
    max_concurrent: int,
    resources: dict[str, float] | None = None,
    view: SweepView | None = None,
    poll: float = 0.5,
) -> list[SweepRun]:
    """Run every member (Ray must be initialised); returns them with their outcome. A run
    starts when its CPUs and GPUs fit in what the running ones leave of `resources`
    (default: the cluster's)."""
    import ray

    if resources is None:
        resources = {k: float(v) for k, v in ray.cluster_resources().items()}

    check_name("experiment", experiment)
    store = StoreLocation.parse(store)  # in the driver, before Ray's tasks see it
    root = open_files(store).child(experiment)
    # Progress reads each running run's metrics.jsonl: every poll on a disk, every 2 s
    # on an object store, where each read is a request.
    every = poll if root.local_path() is not None else max(poll, 2.0)
    last_read = 0.0
    launch = ray.remote(num_cpus=0, max_retries=0)(_launch)
    pending = list(runs)
    active: dict[Any, SweepRun] = {}
    free = dict(resources)
    while pending or active:
        while pending and len(active) < max_concurrent and _fits(needs(pending[0].cfg), free):
            r = pending.pop(0)
            r.state = "running"
            for k, v in needs(r.cfg).items():
                free[k] = free.get(k, 0.0) - v
            ref = launch.remote(r.cfg.to_dict(), store.uri, experiment, r.run_id, r.grid)
            active[ref] = r
        done, _ = ray.wait(list(active), num_returns=1, timeout=poll)
        for ref in done:
            r = active.pop(ref)
            for k, v in needs(r.cfg).items():
                free[k] += v
            try:
                r.summary = ray.get(ref)
                r.state = "completed"
            except Exception as exc:  # one failing run does not stop the sweep
                r.state, r.error = "failed", _short_error(exc)
            _poll(r, root)
        if time.monotonic() - last_read >= every:
            last_read = time.monotonic()
            for r in active.values():
                _poll(r, root)
        if view is not None:
            view.update()
    if view is not None:
        view.update(force=True)
    return runs


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    for line in reversed(text):
        if "failed:" in line or "Error" in line:
            return line.strip()[:300]
    return (text[-1] if text else type(exc).__name__)[:300]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(runs: list[SweepRun]) -> list[dict[str, Any]]:
    """One row per grid value: runs, mean and spread of test accuracy, epochs, wall time."""
    rows: list[dict[str, Any]] = []
    for label in dict.fromkeys(r.label for r in runs):
        group = [r for r in runs if r.label == label]
        ok = [r.summary for r in group if r.state == "completed" and r.summary is not None]
        accs = [s.test_accuracy for s in ok if s.test_accuracy is not None]
        rows.append(
            {
                "label": label,
                "grid": group[0].grid,
                "runs": len(group),
                "completed": len(ok),
                "failed": len(group) - len(ok),
                "test_accuracy_mean": _mean(accs),
                # sample standard deviation over seeds; 0 for a single run
                "test_accuracy_std": (statistics.stdev(accs) if len(accs) > 1 else 0.0)
                if accs
                else None,
                "test_accuracy_min": min(accs, default=None),
                "test_accuracy_max": max(accs, default=None),
                "epochs_mean": _mean([float(s.epochs_run or 0) for s in ok]),
                "wall_seconds_mean": _mean([float(s.wall_seconds or 0) for s in ok]),
            }
        )
    # best mean first; groups with no completed run last
    rows.sort(
        key=lambda row: (
            float("inf") if row["test_accuracy_mean"] is None else -float(row["test_accuracy_mean"])
        )
    )
    return rows


def _cell(row: dict[str, Any], key: str, fmt: str = ".4f") -> str:
    return "-" if row[key] is None else format(row[key], fmt)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The summary rows as an aligned text table."""
    header = ("grid value", "runs", "test acc mean", "std", "min", "max", "epochs", "wall s")
    cells = []
    for row in rows:
        runs = f"{row['completed']}/{row['runs']}" + (
            f" ({row['failed']} failed)" if row["failed"] else ""
        )
        cells.append(
            (
                row["label"],
                runs,
                _cell(row, "test_accuracy_mean"),
                _cell(row, "test_accuracy_std"),
                _cell(row, "test_accuracy_min"),
                _cell(row, "test_accuracy_max"),
                _cell(row, "epochs_mean", ".1f"),
                _cell(row, "wall_seconds_mean", ".1f"),
            )
        )
    return text_table(header, cells, ("left", *["right"] * (len(header) - 1)))


# What a sweep may choose its best run by: summary.json's figures of the kept model on
# the validation split, and whether more is better. Never the test set.
SELECTION_METRICS = {"val_accuracy": True, "val_loss": False}


def best_run(runs: list[SweepRun], metric: str = "val_accuracy") -> SweepRun | None:
    """The completed run with the best validation `metric` (the other validation figure
    breaks ties); its test accuracy is reported, not used to choose it."""
    if metric not in SELECTION_METRICS:
        raise ValueError(
            f"cannot select the best run by {metric!r}: use one of {sorted(SELECTION_METRICS)}"
        )
    ok = [r for r in runs if r.state == "completed" and r.summary is not None]

    def key(r: SweepRun) -> tuple[float, float]:
        assert r.summary is not None
        acc, loss = r.summary.val_accuracy, r.summary.val_loss
        if acc is None or loss is None:
            raise ValueError(f"run {r.run_id}: summary.json has no validation figures")
        return (acc, -loss) if metric == "val_accuracy" else (-loss, acc)

    return max(ok, key=key, default=None)
