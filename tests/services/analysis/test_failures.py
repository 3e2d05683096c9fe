"""Runs that end badly are data: a store with early-stopped, scheduler-stopped, diverged,
crashed and running runs, and what every analysis makes of them, each number checked
against a computation written here.

Budget 10 epochs, 10 classes (chance accuracy 0.1), target 0.95:
- steady: three seeds that early stopping ends at epoch 8, each reaching 0.95 at 6;
- quitter: three seeds a scheduler stopped at epoch 2 (0.5, 0.6), never reaching it;
- diverger: seed 1 reaches it at epoch 3 and completes; seed 2 diverges after two
  epochs (0.4, 0.5); seed 3 diverges before it writes an epoch;
- left out: a steady run that crashed (a worker lost) and a quitter still running.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as scipy_stats

from runstore import RunStore
from services.analysis.compare import Selection, compare, select
from services.analysis.profiles import Workload, profile
from services.analysis.report import format_comparison, left_out_line
from services.analysis.report_analyses import format_sensitivity
from services.analysis.sensitivity import sensitivity
from services.analysis.tuning import expected_best
from services.analysis.wins import win_matrix
from tests.services.analysis.runstore import epoch_line, summary, write_run

DIVERGED = "FloatingPointError: epoch 3: validation loss is nan; the run diverged"
STEADY = [0.5, 0.7, 0.8, 0.9, 0.93, 0.96, 0.97, 0.97]
DIVERGER_1 = [0.6, 0.9, 0.96, 0.97, 0.97, 0.97, 0.97, 0.97, 0.98, 0.98]


def _config(group: str, seed: int, lr: float = 0.1) -> dict[str, Any]:
    return {"seed": seed, "training": {"epochs": 10}, "optimizer": {"name": group, "lr": lr}}


def _run(
    root: Path, group: str, seed: int, curve: list[float], end: dict | None, **kw: Any
) -> None:
    write_run(
        root,
        kw.pop("experiment", "f"),
        kw.pop("run_id", f"{group}-s{seed}"),
        config=_config(group, seed, kw.pop("lr", 0.1)),
        epochs=[epoch_line(i + 1, a, elapsed=1.5 * (i + 1)) for i, a in enumerate(curve)],
        summary=end,
        data={"num_classes": 10},
        **kw,
    )


def failure_store(root: Path, schema: int | None = None) -> Path:
    """The store above; schema None writes summaries as the first format did (a
    divergence told by its reason's text), 2 as Stride writes them now (`failure`)."""

    def failed(epochs: int, reason: str, failure: str) -> dict[str, Any]:
        return summary(None, epochs, status="failed", reason=reason, failure=failure, schema=schema)

    for seed in (1, 2, 3):
        _run(root, "steady", seed, STEADY, summary(0.96, 8) | {"stopped_early": True})
        stopped = summary(None, 2, status="stopped", reason="asha") | {"stopped_by": "asha"}
        _run(root, "quitter", seed, [0.5, 0.6], stopped)
    _run(root, "diverger", 1, DIVERGER_1, summary(0.97, 10))
    _run(root, "diverger", 2, [0.4, 0.5], failed(2, DIVERGED, "diverged"))
    _run(root, "diverger", 3, [], failed(0, DIVERGED, "diverged"))
    _run(root, "steady", 4, [0.5], failed(1, "RuntimeError: worker lost", "error"))
    _run(root, "quitter", 4, [0.5], None)  # running: no summary.json
    return root


def _groups(root: Path, **kw: Any) -> Any:
    return select(RunStore(str(root)), Selection("f", **kw))


@pytest.mark.parametrize("schema", [None, 2], ids=["schema-1-reason", "schema-2-failure"])
def test_every_run_that_ended_counts_and_the_rest_are_accounted_for(
    tmp_path: Path, schema: int | None
) -> None:
    groups = _groups(failure_store(tmp_path, schema))
    assert {g: len(r) for g, r in groups.runs.items()} == {
        "diverger": 3,  # seed 3 too, though it wrote no epoch
        "quitter": 3,
        "steady": 3,
    }
    reasons = {s.run_id: s.reason for s in groups.skipped}
    assert reasons == {
        "steady-s4": "failed outside the training: RuntimeError: worker lost",
        "quitter-s4": "running",
    }
    assert left_out_line(groups.skipped) == (
        "left out: 2 runs (1 failed outside the training, 1 running)"
    )
    everything = _groups(tmp_path, include_unfinished=True)
    assert len(everything.runs["steady"]) == 4 and len(everything.runs["quitter"]) == 4


def test_a_current_summary_is_read_by_its_failure_field_not_its_reason(tmp_path: Path) -> None:
    """From schema 2 on `failure` alone decides: a divergence whose reason says nothing
    of it counts, an error whose reason quotes the old phrase does not. Without `failure`
    a schema-2 failed run failed outside the training."""

    def failed(reason: str, failure: str | None) -> dict[str, Any]:
        return summary(None, 1, status="failed", reason=reason, failure=failure, schema=2)

    _run(tmp_path, "a", 1, [0.5], summary(0.9, 1, schema=2))
    _run(tmp_path, "a", 2, [0.4], failed("loss became inf", "diverged"))
    _run(tmp_path, "a", 3, [0.4], failed("ValueError: bad image; the run diverged", "error"))
    _run(tmp_path, "a", 4, [0.4], failed("killed", None))
    groups = _groups(tmp_path)
    assert [r.run_id for r in groups.runs["a"]] == ["a-s1", "a-s2"]
    assert {s.run_id: s.reason for s in groups.skipped} == {
        "a-s3": "failed outside the training: ValueError: bad image; the run diverged",
        "a-s4": "failed outside the training: killed",
    }
    c = compare(groups, target=0.95)
    assert [r.outcome for r in c.groups[0].runs] == ["completed", "diverged"]


def test_time_to_target_counts_the_budget_whatever_ended_the_run(tmp_path: Path) -> None:
    c = compare(_groups(failure_store(tmp_path)), target=0.95)
    g = {x.name: x for x in c.groups}
    assert [r.epochs_to_target for r in g["steady"].runs] == [6, 6, 6]
    assert [r.epochs_to_target for r in g["quitter"].runs] == [10, 10, 10]
    assert [r.epochs_to_target for r in g["diverger"].runs] == [3, 10, 10]
    # seconds: the quitters at their own pace, 1.5 s an epoch, for the 10 of their budget
    assert [r.seconds_to_target for r in g["quitter"].runs] == pytest.approx([15.0] * 3)
    assert [r.seconds_to_target for r in g["diverger"].runs] == [4.5, 15.0, None]
    # giving up early no longer looks fast: reaching it at 6 ranks first
    assert c.ranking == ("steady", "diverger", "quitter")
    assert (g["diverger"].reached_target, g["diverger"].diverged) == (1, 2)
    assert g["quitter"].stopped == 3
    assert [r.budget_epochs for r in g["quitter"].runs] == [10, 10, 10]
    stat = g["diverger"].epochs_to_target
    low, high = scipy_stats.t.interval(0.95, 2, loc=23 / 3, scale=scipy_stats.sem([3, 10, 10]))
    # the interval is cut at 0, below which no number of epochs goes
    assert low < 0 and (stat.mean, stat.ci_low, stat.ci_high) == pytest.approx((23 / 3, 0, high))


@pytest.mark.parametrize("schema", [None, 2], ids=["schema-1-reason", "schema-2-failure"])
def test_a_diverged_run_is_a_model_at_chance(tmp_path: Path, schema: int | None) -> None:
    c = compare(_groups(failure_store(tmp_path, schema)), rank_by="final_val_accuracy")
    d = next(x for x in c.groups if x.name == "diverger")
    assert [r.outcome for r in d.runs] == ["completed", "diverged", "diverged"]
    assert [r.final_val_accuracy for r in d.runs] == [0.98, 0.1, 0.1]
    assert [r.test_accuracy for r in d.runs] == [0.97, 0.1, 0.1]
    assert [r.best_val_accuracy for r in d.runs] == [0.98, 0.5, 0.1]  # the best it wrote
    assert d.final_val_accuracy.mean == pytest.approx((0.98 + 0.1 + 0.1) / 3)
    assert (d.final_val_accuracy.ci_low, d.final_val_accuracy.ci_high) == (0.0, 1.0)  # cut
    # the AUC horizon: the shortest run that did not diverge (the quitters, 2 epochs); a
    # run that diverged inside it has an infinite area
    assert c.auc_epochs == 2
    assert [r.auc_val_loss for r in d.runs][1:] == [pytest.approx(0.55), math.inf]
    assert d.auc_val_loss.mean == math.inf and d.auc_val_loss.ci_low is None
    assert [r.accuracy_gap for r in d.runs][1:] == [None, None]
    text = format_comparison(c)
    assert "2 diverged (final and test accuracy counted at chance)" in text
    assert "3 stopped by a scheduler (counted)" in text
    assert "95% Student's t interval of the mean" in text
    assert "left out: 2 runs (1 failed outside the training, 1 running):" in text


def test_without_a_class_count_a_diverged_run_scores_the_worst_accuracy(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        "f",
        "x-s1",
        config=_config("x", 1),
        epochs=[],
        summary=summary(None, 0, status="failed", reason=DIVERGED),
    )
    (result,) = compare(_groups(tmp_path), rank_by="final_val_accuracy").groups[0].runs
    assert (result.final_val_accuracy, result.best_val_accuracy) == (0.0, 0.0)


def test_the_win_matrix_plays_every_counted_run(tmp_path: Path) -> None:
    w = win_matrix(_groups(failure_store(tmp_path)), metric="final_val_accuracy")
    cells = {(c.a, c.b): c for c in w.cells}
    finals = {
        "steady": dict.fromkeys((1, 2, 3), 0.97),
        "quitter": dict.fromkeys((1, 2, 3), 0.6),
        "diverger": {1: 0.98, 2: 0.1, 3: 0.1},
    }
    for (a, b), cell in cells.items():
        wins = [
            1.0 if finals[a][s] > finals[b][s] else 0.5 if finals[a][s] == finals[b][s] else 0.0
            for s in (1, 2, 3)
        ]
        assert cell.paired and cell.pairs == 3
        assert cell.probability == pytest.approx(sum(wins) / 3)
    assert cells["quitter", "diverger"].probability == pytest.approx(2 / 3)


def test_expected_best_counts_a_diverged_trial(tmp_path: Path) -> None:
    e = expected_best(_groups(failure_store(tmp_path)), metric="final_val_accuracy")
    d = next(c for c in e.curves if c.name == "diverger")
    assert (d.trials, d.diverged) == (3, 2)
    values = [0.98, 0.1, 0.1]
    for k in (1, 2, 3):
        subsets = list(itertools.combinations(values, k))
        assert d.mean[k - 1] == pytest.approx(sum(max(s) for s in subsets) / len(subsets))


def test_sensitivity_shows_where_a_rate_diverges(tmp_path: Path) -> None:
    for seed in (1, 2):
        _run(tmp_path, "a", seed, [0.8, 0.9], summary(0.9, 2), experiment="s", lr=0.1)
    _run(tmp_path, "a", 3, [0.2, 0.3], summary(0.3, 2), experiment="s", lr=1.0)
    failed = summary(None, 1, status="failed", reason=DIVERGED)
    _run(tmp_path, "a", 4, [0.2], failed, experiment="s", lr=1.0)
    groups = select(RunStore(str(tmp_path)), Selection("s"))
    s = sensitivity(groups)
    (curve,) = s.curves
    low, high = curve.points
    assert (high.lr, high.n, high.diverged) == (1.0, 2, 1)
    assert high.mean == pytest.approx((0.3 + 0.1) / 2)
    assert (low.diverged, curve.best_lr) == (0, 0.1)
    assert "1/2" in format_sensitivity(s)
    loss = sensitivity(groups, metric="final_val_loss")
    assert loss.curves[0].points[1].mean == math.inf and loss.curves[0].best_lr == 0.1


def test_a_diverged_run_never_reaches_the_target_of_a_profile(tmp_path: Path) -> None:
    p = profile(RunStore(str(failure_store(tmp_path))), [Workload("f")], group_by="optimizer.name")
    times = {g.group: (g.runs, g.reached, g.time, g.ratio) for g in p.workloads[0].groups}
    # diverger: 3, never, never: the median is never; steady: 6 on every seed
    assert times["diverger"] == (3, 1, math.inf, math.inf)
    assert times["steady"] == (3, 3, 6.0, 1.0)
    assert (p.curves[0].group, p.curves[0].score) == ("steady", 1.0)


def test_the_figure_draws_a_group_whose_runs_all_diverged_before_an_epoch(tmp_path: Path) -> None:
    from services.analysis.compare import gradient_flow
    from services.analysis.layers import dead_units
    from services.analysis.panels import Extras
    from services.analysis.plots import render_png
    from tests.services.analysis.pngs import png_size

    failure_store(tmp_path)
    failed = summary(None, 0, status="failed", reason=DIVERGED)
    for seed in (1, 2):
        _run(tmp_path, "gone", seed, [], failed)
    groups = _groups(tmp_path)
    assert len(groups.runs["gone"]) == 2
    extras = Extras(
        dead_units=dead_units(groups.runs),
        sensitivity=None,
        expected_best=expected_best(groups),
        win_matrix=win_matrix(groups),
    )
    png = render_png(groups, gradient_flow(groups), width=600, height=500, extras=extras)
    assert png_size(png) == (600, 500)
