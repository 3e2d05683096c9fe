"""How a run ended, as the readers of results count it.

summary.json's `status` says completed, failed or stopped; a failed run is one of two
very different things, which its `failure` field names:

- **diverged**: the training itself failed, its loss became non-finite (the train loop
  writes `failure: "diverged"` when it sees it). That is a result of the
  configuration, like a low accuracy: comparisons count it.
- **failed** (`failure: "error"`): something outside the training went wrong (a
  worker lost, an error in the data, a bug). That says nothing about the
  configuration: comparisons leave it out and say so.

Summaries written before the field existed (schema 1) carry the divergence only in
their reason's text (the train loop's `FloatingPointError("epoch N: validation loss is
nan; the run diverged")`); for them, and only for them, that phrase decides.

`running` is a run without summary.json (still going, or killed without a word).
"""

from __future__ import annotations

from runstore.reader import Run
from runstore.records import SummaryRecord

DIVERGED_MARK = "the run diverged"  # a schema-1 failed run's reason, when it diverged
OUTCOMES = ("completed", "stopped", "diverged", "failed", "running")
RESULTS = ("completed", "stopped", "diverged")  # outcomes that are results of a config


def failure(summary: SummaryRecord | None) -> str | None:
    """How a failed run failed: "diverged" or "error" (None for a run that did not fail).
    A schema-1 summary has no `failure`: its reason's text decides."""
    if summary is None or summary.status != "failed":
        return None
    if summary.schema < 2:
        return "diverged" if DIVERGED_MARK in (summary.reason or "") else "error"
    return summary.failure or "error"  # a failed run that does not say: not the training's


def diverged(summary: SummaryRecord | None) -> bool:
    """Whether a run failed because its loss became non-finite."""
    return failure(summary) == "diverged"


def outcome(run: Run) -> str:
    """completed, stopped, diverged, failed (outside the training) or running."""
    if diverged(run.summary):
        return "diverged"
    return run.status
