"""What a sweep shows and returns: one `SweepRun` per trial, the live view (`SweepView`),
the summary table per configuration and the best run by a validation figure (never
the test set). No Ray here: the driver (pipeline/sweep.py) feeds these."""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from pipeline.config import RunConfig
from pipeline.tables import format_table as text_table
from runstore import SummaryRecord


@dataclass
class SweepRun:
    """One trial of a sweep: its values, seed, config and what became of it."""

    label: str  # the values, e.g. "adam" or "sgd_0.0123"
    grid: dict[str, Any]  # config key -> value of this trial (grid and sampled)
    seed: int
    cfg: RunConfig
    run_id: str
    state: str = "pending"  # pending, running, completed, failed, stopped
    epoch: int = 0
    val_accuracy: float | None = None
    summary: SummaryRecord | None = None
    error: str = ""
    trial_id: str = ""


# ------------------------------------------------------------------ the live view


class SweepView:
    """One line per trial. On a terminal the block is redrawn in place; in a log, a line
    is printed when a trial changes state, and a progress line every `every` seconds."""

    def __init__(
        self, runs: list[SweepRun], stream: TextIO | None = None, every: float = 15.0
    ) -> None:
        # sys.stderr as it is now, not as it was at import: a default argument would keep
        # the stream of the moment the module was imported, closed since (pytest's capture).
        stream = sys.stderr if stream is None else stream
        self.runs, self.stream, self.every = runs, stream, every
        self.tty = stream.isatty()
        self.drawn = 0
        self.planned = len(runs)
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
                done = sum(r.state in ("completed", "failed", "stopped") for r in self.runs)
                running = [r for r in self.runs if r.state == "running"]
                total = max(self.planned, len(self.runs))
                self.stream.write(
                    f"[sweep] {done}/{total} done, {len(running)} running"
                    + "".join(f", {r.label} s{r.seed} epoch {r.epoch}" for r in running)
                    + "\n"
                )
        self.stream.flush()


# ------------------------------------------------------------------ results


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(runs: list[SweepRun]) -> list[dict[str, Any]]:
    """One row per configuration: runs, mean and spread of test accuracy, epochs, wall."""
    rows: list[dict[str, Any]] = []

    def values(r: SweepRun) -> str:  # labels round sampled values; group by the values
        return json.dumps(r.grid, sort_keys=True, default=str)

    for key in dict.fromkeys(values(r) for r in runs):
        group = [r for r in runs if values(r) == key]
        label = group[0].label
        ok = [r.summary for r in group if r.state == "completed" and r.summary is not None]
        accs = [s.test_accuracy for s in ok if s.test_accuracy is not None]
        stopped = sum(r.state == "stopped" for r in group)
        rows.append(
            {
                "label": label,
                "grid": group[0].grid,
                "runs": len(group),
                "completed": len(ok),
                "stopped": stopped,
                "failed": len(group) - len(ok) - stopped,
                "test_accuracy_mean": _mean(accs),
                # sample standard deviation over seeds; 0 for a single run
                "test_accuracy_std": (statistics.stdev(accs) if len(accs) > 1 else 0.0)
                if accs
                else None,
                "test_accuracy_min": min(accs, default=None),
                "test_accuracy_max": max(accs, default=None),
                "epochs_mean": _mean(
                    [float(r.summary.epochs_run or 0) for r in group if r.summary is not None]
                ),
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
    header = ("values", "runs", "test acc mean", "std", "min", "max", "epochs", "wall s")
    cells = []
    for row in rows:
        notes = [f"{row[k]} {k}" for k in ("stopped", "failed") if row.get(k)]
        runs = f"{row['completed']}/{row['runs']}" + (f" ({', '.join(notes)})" if notes else "")
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
