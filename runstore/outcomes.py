"""How a run ended, as the readers of results count it.

summary.json's `status` says completed, failed or stopped; a failed run is one of two
very different things, told apart by its reason:

- **diverged**: the training itself failed, its loss became non-finite (the train
  loop raises `FloatingPointError("epoch N: validation loss is nan; the run
  diverged")`, and the summary's reason keeps that text). That is a result of the
  configuration, like a low accuracy: comparisons count it.
- **failed**: something outside the training went wrong (a worker lost, an error in
  the data, a bug). That says nothing about the configuration: comparisons leave it
  out and say so.

`running` is a run without summary.json (still going, or killed without a word).
"""

from __future__ import annotations

from runstore.reader import Run
from runstore.records import SummaryRecord

DIVERGED_MARK = "the run diverged"  # in the reason of a run whose loss became non-finite
OUTCOMES = ("completed", "stopped", "diverged", "failed", "running")
RESULTS = ("completed", "stopped", "diverged")  # outcomes that are results of a config


def diverged(summary: SummaryRecord | None) -> bool:
    """Whether a run failed because its loss became non-finite."""
    return (
        summary is not None
        and summary.status == "failed"
        and DIVERGED_MARK in (summary.reason or "")
    )


def outcome(run: Run) -> str:
    """completed, stopped, diverged, failed (outside the training) or running."""
    if diverged(run.summary):
        return "diverged"
    return run.status
