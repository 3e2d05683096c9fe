"""Grouping, per-group statistics, ranking, pairing and gradient flow on the known store."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as scipy_stats

from runstore import RunStore
from services.analysis.compare import Comparison, Selection, compare, gradient_flow, select
from services.analysis.errors import InvalidRequest, NoRuns
from tests.services.analysis.runstore import (
    CURVES,
    TEST_ACCURACY,
    epoch_line,
    run_config,
    run_id,
    summary,
    write_run,
)


def _compare(root: Path, **kwargs: Any) -> Comparison:
    selection = Selection("opt", **kwargs)
    return compare(select(RunStore(str(root)), selection))


def test_group_statistics_are_exact(known_store: Path) -> None:
    c = _compare(known_store)
    assert c.ranking == ("adam", "sgd")
    adam, sgd = c.groups
    finals = [CURVES["adam", s][-1] for s in (1, 2, 3)]
    assert adam.final_val_accuracy.mean == pytest.approx(statistics.mean(finals))
    assert adam.final_val_accuracy.std == pytest.approx(statistics.stdev(finals))
    assert adam.best_val_accuracy.mean == pytest.approx(statistics.mean(finals))
    tests = [TEST_ACCURACY["sgd", s] for s in (1, 2, 3)]
    assert sgd.test_accuracy.mean == pytest.approx(statistics.mean(tests))
    assert sgd.test_accuracy.std == pytest.approx(statistics.stdev(tests))
    # the interval, independently: scipy's t interval around the mean
    ci = sgd.test_accuracy
    low, high = scipy_stats.t.interval(
        0.95, 2, loc=statistics.mean(tests), scale=scipy_stats.sem(tests)
    )
    assert (ci.ci_low, ci.ci_high, ci.interval) == (
        pytest.approx(max(low, 0.0)),
        pytest.approx(min(high, 1.0)),  # an accuracy's interval is cut at 1
        "student_t",
    )
    assert sgd.best_val_accuracy.mean == pytest.approx((0.7 + 0.96 + 0.94) / 3)
    assert adam.wall_seconds.mean == pytest.approx(3.5)
    assert adam.images_per_second.mean == pytest.approx(1000.0)
    # the helper writes train accuracy = val + 0.01 and train loss = val loss + 0.05
    assert adam.accuracy_gap.mean == pytest.approx(0.01)
    assert adam.loss_gap.mean == pytest.approx(-0.05)


def test_time_to_target_with_and_without_reaching(known_store: Path) -> None:
    adam, sgd = _compare(known_store).groups
    assert [r.epochs_to_target for r in adam.runs] == [2, 3, 1]
    assert (adam.epochs_to_target.mean, adam.epochs_to_target.std) == (2.0, 1.0)
    assert adam.reached_target == 3
    # sgd seeds 1 and 3 never reach 0.95: they count as their whole budget (3 epochs, 3 s)
    assert [(r.reached_target, r.epochs_to_target) for r in sgd.runs] == [
        (False, 3),
        (True, 3),
        (False, 3),
    ]
    assert sgd.reached_target == 1
    assert sgd.seconds_to_target.mean == 3.0
    lower = _compare(known_store)
    assert lower.target == 0.95


def test_lower_target_changes_time_to_target(known_store: Path) -> None:
    c = compare(select(RunStore(str(known_store)), Selection("opt")), target=0.5)
    adam, sgd = (c.groups[c.ranking.index(n)] for n in ("adam", "sgd"))
    assert [r.epochs_to_target for r in adam.runs] == [1, 1, 1]
    assert [r.epochs_to_target for r in sgd.runs] == [2, 2, 2]


def test_auc_is_over_the_common_epochs(known_store: Path) -> None:
    c = _compare(known_store)
    assert c.auc_epochs == 3
    adam_s1 = c.groups[0].runs[0]
    # val_loss = 1 - val_accuracy = [0.5, 0.04, 0.03]: (0.5+0.04)/2 + (0.04+0.03)/2
    assert adam_s1.auc_val_loss == pytest.approx(0.305)
    # an early-stopped run of two epochs shortens every run's horizon to two epochs
    write_run(
        known_store,
        "opt",
        "adam-short",
        config=run_config("adam", 7),
        epochs=[epoch_line(1, 0.9), epoch_line(2, 0.96)],
        summary=summary(0.96, 2),
    )
    c = _compare(known_store)
    assert c.auc_epochs == 2
    adam = c.groups[c.ranking.index("adam")]
    by_id = {r.run_id: r for r in adam.runs}
    assert by_id[run_id("adam", 1)].auc_val_loss == pytest.approx(0.27)
    assert by_id["adam-short"].auc_val_loss == pytest.approx((0.1 + 0.04) / 2)
    assert adam.epochs.mean == pytest.approx((3 + 3 + 3 + 2) / 4)


def test_pairwise_probability_pairs_by_seed(known_store: Path) -> None:
    c = _compare(known_store)
    p = {(w.a, w.b): w for w in c.pairwise}
    assert p["adam", "sgd"].paired and p["adam", "sgd"].pairs == 3
    # seed 1: 2 < 3 win; seed 2: 3 = 3 tie; seed 3: 1 < 3 win
    assert p["adam", "sgd"].probability == pytest.approx(2.5 / 3)
    assert p["sgd", "adam"].probability == pytest.approx(0.5 / 3)


def test_rank_by_accuracy(known_store: Path) -> None:
    c = compare(select(RunStore(str(known_store)), Selection("opt")), rank_by="test_accuracy")
    assert c.ranking == ("adam", "sgd")
    p = {(w.a, w.b): w.probability for w in c.pairwise}
    # test accuracy by seed: adam .97 .95 .99 vs sgd .70 .96 .94 -> win, loss, win
    assert p["adam", "sgd"] == pytest.approx(2 / 3)
    with pytest.raises(InvalidRequest, match="allowed: epochs_to_target"):
        compare(select(RunStore(str(known_store)), Selection("opt")), rank_by="speed")


def test_unfinished_runs_are_left_out_unless_asked(known_store: Path) -> None:
    write_run(
        known_store,
        "opt",
        "adam-running",
        config=run_config("adam", 4),
        epochs=[epoch_line(1, 0.99)],
    )
    write_run(
        known_store,
        "opt",
        "adam-failed",
        config=run_config("adam", 5),
        epochs=[epoch_line(1, 0.1)],
        summary=summary(None, 1, status="failed", reason="RuntimeError: worker lost"),
    )
    (known_store / "opt" / "broken").mkdir()
    (known_store / "opt" / "broken" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (known_store / "opt" / "starting" / "checkpoints").mkdir(parents=True)
    c = _compare(known_store)
    assert len(c.groups[0].runs) == 3
    reasons = {s.run_id: s.reason for s in c.skipped}
    assert reasons["adam-running"] == "running"
    assert reasons["adam-failed"] == "failed outside the training: RuntimeError: worker lost"
    assert reasons["broken"] == "malformed: config.json is missing"
    assert reasons["starting"] == "running"
    c = _compare(known_store, include_unfinished=True)
    adam = c.groups[c.ranking.index("adam")]
    assert len(adam.runs) == 5
    assert {s.run_id for s in c.skipped} == {"broken", "starting"}


def test_explicit_groups_and_filters(known_store: Path) -> None:
    groups = {"first": [run_id("adam", 1), run_id("sgd", 1)], "second": [run_id("adam", 2)]}
    c = _compare(known_store, groups=groups)
    assert c.group_by == "run ids"
    assert sorted(len(g.runs) for g in c.groups) == [1, 2]
    with pytest.raises(InvalidRequest, match="'nope' is not a comparable run"):
        _compare(known_store, groups={"g": ["nope"]})
    c = _compare(known_store, group_by="seed", where=["optimizer.name=sgd"])
    assert sorted(c.ranking) == ["1", "2", "3"]
    assert all(len(g.runs) == 1 for g in c.groups)
    assert all(g.final_val_accuracy.std is None for g in c.groups)


def test_group_by_several_keys(known_store: Path) -> None:
    c = _compare(known_store, group_by="optimizer.name, seed")
    assert sorted(c.ranking) == [f"{o}, {s}" for o in ("adam", "sgd") for s in (1, 2, 3)]
    with pytest.raises(InvalidRequest, match="config key 'nope'"):
        _compare(known_store, group_by="optimizer.name,nope")


def test_bad_selections_are_clear_errors(known_store: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"no run of 'opt' has config key 'optimiser\.name'"):
        _compare(known_store, group_by="optimiser.name")
    with pytest.raises(NoRuns, match="no run of experiment 'opt'"):
        _compare(known_store, where=["optimizer.name=lion"])
    with pytest.raises(InvalidRequest, match=r"not in \(0, 1\]"):
        compare(select(RunStore(str(known_store)), Selection("opt")), target=95)


def test_gradient_flow_per_layer_and_ratio(tmp_path: Path) -> None:
    # sigmoid: first layer 1e-4 of the last; relu: 0.5 of it; seed 2 doubles every norm.
    for act, norms in (("sigmoid", (1e-4, 1e-2, 1.0)), ("relu", (0.5, 0.7, 1.0))):
        for seed in (1, 2):
            scaled = tuple(n * seed for n in norms)
            write_run(
                tmp_path,
                "act",
                f"{act}-s{seed}",
                config=run_config("sgd", seed, activation=act),
                epochs=[epoch_line(e, 0.5, grad_norms=scaled) for e in (1, 2)],
                summary=summary(0.5, 2),
            )
    groups = select(RunStore(str(tmp_path)), Selection("act", group_by="model.activation.name"))
    flows = {f.name: f for f in gradient_flow(groups)}
    sig = flows["sigmoid"]
    assert [layer.layer for layer in sig.layers] == [
        "features.0.conv",
        "features.1.conv",
        "head.fc",
    ]
    assert sig.layers[0].mean == pytest.approx((1.5e-4, 1.5e-4))
    assert sig.layers[0].std[0] == pytest.approx(statistics.stdev([1e-4, 2e-4]))
    assert sig.ratio == pytest.approx(1e-4)
    assert sig.ratio_by_epoch == pytest.approx((1e-4, 1e-4))
    assert flows["relu"].ratio == pytest.approx(0.5)
    assert math.log10(sig.ratio) == pytest.approx(-4)


def test_the_work_of_a_comparison_is_bounded_before_it_starts(tmp_path: Path) -> None:
    # 2,000 groups cost tens of seconds of CPU before the answer was refused as too
    # large; they are now refused at once.
    import time

    from services.analysis import compare as cmp

    for seed in range(cmp.MAX_GROUPS + 1):
        write_run(
            tmp_path,
            "many",
            f"r{seed}",
            config=run_config("adam", seed),
            epochs=[epoch_line(1, 0.5)],
            summary=summary(0.5, 1),
        )
    store = RunStore(str(tmp_path))
    start = time.monotonic()
    with pytest.raises(InvalidRequest, match=r"makes 257 groups; at most 256"):
        select(store, Selection(experiment="many", group_by="seed"))
    assert time.monotonic() - start < 10
