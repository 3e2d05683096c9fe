"""The newer analyses on synthetic run stores whose answers are known by construction:
performance profiles, learning-rate sensitivity, expected best after k trials, the win
matrix, dead units, gradient flow over weight layers, and stopped runs."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest

from runstore import RunStore
from services.analysis import tuning
from services.analysis.compare import Selection, compare, gradient_flow, select
from services.analysis.errors import InvalidRequest
from services.analysis.layers import dead_units
from services.analysis.profiles import Workload, profile
from services.analysis.sensitivity import sensitivity
from services.analysis.tuning import expected_best
from services.analysis.wins import win_matrix
from tests.services.analysis.runstore import epoch_line, run_config, summary, write_run

# final val accuracy by (optimizer, lr, seed): adam peaks at 0.01, sgd at 0.1
LR_CURVES = {
    ("adam", 0.001, 1): 0.80, ("adam", 0.001, 2): 0.84,
    ("adam", 0.01, 1): 0.95, ("adam", 0.01, 2): 0.97,
    ("adam", 0.1, 1): 0.30, ("adam", 0.1, 2): 0.50,
    ("sgd", 0.001, 1): 0.20, ("sgd", 0.001, 2): 0.22,
    ("sgd", 0.01, 1): 0.60, ("sgd", 0.01, 2): 0.64,
    ("sgd", 0.1, 1): 0.90, ("sgd", 0.1, 2): 0.92,
}  # fmt: skip


def lr_store(root: Path, experiment: str = "lr") -> Path:
    """The runs of LR_CURVES: two epochs each, the last one at the known accuracy."""
    for (opt, lr, seed), final in LR_CURVES.items():
        config = run_config(opt, seed) | {"optimizer": {"name": opt, "lr": lr}}
        write_run(
            root,
            experiment,
            f"{opt}-{lr}-s{seed}",
            config=config,
            epochs=[epoch_line(1, final / 2), epoch_line(2, final)],
            summary=summary(final, 2),
        )
    return root


def write_curves(root: Path, experiment: str, curves: dict[tuple[str, int], list[float]]) -> None:
    for (opt, seed), curve in curves.items():
        write_run(
            root,
            experiment,
            f"{opt}-s{seed}",
            config=run_config(opt, seed),
            epochs=[epoch_line(i + 1, a, elapsed=2.0 * (i + 1)) for i, a in enumerate(curve)],
            summary=summary(curve[-1], len(curve)),
        )


# ------------------------------------------------------------------ profiles


def profile_store(root: Path) -> RunStore:
    # w1 (target 0.9): a at epoch 1, b at epoch 2, c never -> ratios 1, 2, inf
    write_curves(root, "w1", {("a", 1): [0.9, 0.9], ("b", 1): [0.5, 0.9], ("c", 1): [0.1, 0.2]})
    # w2 (target 0.9): c at 1, a at 3 (median of 3, 3, never), b never
    write_curves(
        root,
        "w2",
        {
            ("a", 1): [0.1, 0.1, 0.9],
            ("a", 2): [0.1, 0.1, 0.95],
            ("a", 3): [0.1, 0.1, 0.1],
            ("b", 1): [0.1, 0.1, 0.1],
            ("c", 1): [0.95, 0.95, 0.95],
        },
    )
    return RunStore(str(root))


def test_profile_ratios_rho_and_area_by_construction(tmp_path: Path) -> None:
    store = profile_store(tmp_path)
    p = profile(store, [Workload("w1"), Workload("w2")], group_by="optimizer.name", target=0.9)
    w1, w2 = p.workloads
    assert [(g.group, g.time, g.ratio) for g in w1.groups] == [
        ("a", 1.0, 1.0),
        ("b", 2.0, 2.0),
        ("c", math.inf, math.inf),
    ]
    assert w1.best_group == "a" and w2.best_group == "c"
    assert [(g.reached, g.runs, g.ratio) for g in w2.groups] == [
        (2, 3, 3.0),
        (0, 1, math.inf),
        (1, 1, 1.0),
    ]
    # AlgoPerf's score: per workload (tau_max - r) / (tau_max - 1), the mean over them
    score = {c.group: c.score for c in p.curves}
    assert score["a"] == pytest.approx((3 / 3 + 1 / 3) / 2)
    assert score["b"] == pytest.approx((2 / 3 + 0) / 2)
    assert score["c"] == pytest.approx((0 + 3 / 3) / 2)
    area = {c.group: c.log_tau_area for c in p.curves}
    ln4 = math.log(4.0)
    assert area["a"] == pytest.approx((1 + (ln4 - math.log(3)) / ln4) / 2)
    assert area["b"] == pytest.approx(0.5 / 2)
    assert area["c"] == pytest.approx(0.5)
    assert [c.group for c in p.curves] == ["a", "c", "b"]  # best score first
    rho_a = dict(zip(p.taus, p.curves[0].rho, strict=True))
    assert rho_a[1.0] == 0.5 and rho_a[4.0] == 1.0


def test_profile_in_seconds_and_a_group_absent_from_a_workload(tmp_path: Path) -> None:
    store = profile_store(tmp_path)
    write_curves(tmp_path, "w3", {("a", 1): [0.95], ("d", 1): [0.95]})
    p = profile(store, [Workload("w1"), Workload("w3")], group_by="optimizer.name", time="seconds")
    assert p.workloads[0].target == 0.95  # the default accuracy target
    w3 = {g.group: g for g in p.workloads[1].groups}
    assert w3["b"].runs == 0 and math.isinf(w3["b"].ratio)  # absent: never reached
    assert w3["a"].time == 2.0  # the elapsed seconds of epoch 1


def test_profile_over_experiments_without_a_shared_metric(tmp_path: Path) -> None:
    write_curves(tmp_path, "acc", {("a", 1): [0.9]})
    write_run(
        tmp_path,
        "lossonly",
        "r",
        config=run_config("a", 1),
        epochs=[{"epoch": 1, "val_loss": 0.5}],
        summary=summary(None, 1),
    )
    store = RunStore(str(tmp_path))
    with pytest.raises(InvalidRequest, match=r"no run of 'lossonly' has val_accuracy.*shared"):
        profile(store, [Workload("acc"), Workload("lossonly")], group_by="optimizer.name")
    with pytest.raises(InvalidRequest, match="has no val_loss target"):
        profile(store, [Workload("acc")], group_by="optimizer.name", metric="val_loss")
    p = profile(
        store, [Workload("acc", 0.2), Workload("lossonly", 0.6)], group_by="optimizer.name",
        metric="val_loss",
    )  # fmt: skip
    assert [g.ratio for w in p.workloads for g in w.groups] == [1.0, 1.0]
    with pytest.raises(InvalidRequest, match="tau_max"):
        profile(store, [Workload("acc")], group_by="optimizer.name", tau_max=1.0)
    with pytest.raises(InvalidRequest, match="1 to 64 workloads"):
        profile(store, [], group_by="optimizer.name")


# --------------------------------------------------------------- sensitivity


def test_sensitivity_curves_by_construction(tmp_path: Path) -> None:
    groups = select(RunStore(str(lr_store(tmp_path))), Selection("lr"))
    s = sensitivity(groups)
    adam, sgd = s.curves
    assert [p.lr for p in adam.points] == [0.001, 0.01, 0.1]
    mid = adam.points[1]
    assert (mid.n, mid.mean, mid.low, mid.high) == (2, pytest.approx(0.96), 0.95, 0.97)
    assert mid.std == pytest.approx(math.sqrt(2) * 0.01)
    assert (adam.best_lr, sgd.best_lr) == (0.01, 0.1)
    loss = sensitivity(groups, metric="final_val_loss")
    assert loss.curves[0].best_lr == 0.01  # lowest loss where accuracy is highest


def test_sensitivity_without_a_learning_rate_axis(known_store: Path, tmp_path: Path) -> None:
    groups = select(RunStore(str(known_store)), Selection("opt"))
    with pytest.raises(InvalidRequest, match=r"no learning-rate axis.*\(0\.01\)"):
        sensitivity(groups)
    with pytest.raises(InvalidRequest, match=r"no run of 'opt' has a learning rate at 'x.lr'"):
        sensitivity(groups, lr_key="x.lr")
    lr_groups = select(RunStore(str(lr_store(tmp_path))), Selection("lr", "optimizer.lr"))
    with pytest.raises(InvalidRequest, match="grouped by the learning rate"):
        sensitivity(lr_groups)
    with pytest.raises(InvalidRequest, match="sensitivity metric 'auc'"):
        sensitivity(groups, metric="auc")


def test_sensitivity_reads_effective_lr_when_the_config_has_none(tmp_path: Path) -> None:
    for lr in (0.1, 0.2):
        write_run(
            tmp_path,
            "e",
            f"r{lr}",
            config=run_config("adam", 1) | {"optimizer": {"name": "adam", "lr": None}},
            effective={"lr": lr},
            epochs=[epoch_line(1, lr)],
            summary=summary(lr, 1),
        )
    s = sensitivity(select(RunStore(str(tmp_path)), Selection("e")))
    assert [p.lr for p in s.curves[0].points] == [0.1, 0.2]


# ------------------------------------------------------------- expected best


def test_expected_best_after_k_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    groups = select(RunStore(str(lr_store(tmp_path))), Selection("lr"))
    e = expected_best(groups, metric="final_val_accuracy")
    adam = e.curves[0]
    values = sorted(v for (o, _, _), v in LR_CURVES.items() if o == "adam")
    assert adam.trials == 6 and adam.ks == (1, 2, 3, 4, 5, 6)
    assert adam.mean[0] == pytest.approx(sum(values) / 6)
    # the best of each of the 15 pairs of trials, averaged (without replacement)
    pairs = list(itertools.combinations(values, 2))
    assert adam.mean[1] == pytest.approx(sum(max(p) for p in pairs) / len(pairs))
    assert adam.mean[-1] == pytest.approx(max(values))  # k = n: the best trial
    assert len(expected_best(groups, k=2).curves[1].ks) == 2
    with pytest.raises(InvalidRequest, match=r"k 7 is larger than the 6 trials of group 'adam'"):
        expected_best(groups, k=7)
    monkeypatch.setattr(tuning, "MAX_WEIGHED", 20)  # 6 trials x 2 k x 2 groups = 24
    with pytest.raises(InvalidRequest, match=r"would weigh 24 values; at most 20"):
        expected_best(groups, k=2)


# ---------------------------------------------------------------- win matrix


def test_win_matrix_reports_how_it_paired(known_store: Path, tmp_path: Path) -> None:
    groups = select(RunStore(str(known_store)), Selection("opt"))
    w = win_matrix(groups, metric="final_val_accuracy")
    cells = {(c.a, c.b): c for c in w.cells}
    # final accuracies adam .97 .95 .98 vs sgd .70 .96 .94: adam wins seeds 1 and 3
    assert cells["adam", "sgd"].probability == pytest.approx(2 / 3)
    assert cells["sgd", "adam"].probability == pytest.approx(1 / 3)
    assert w.pairing == "paired by seed" and cells["adam", "sgd"].pairs == 3
    write_curves(tmp_path, "e", {("a", 1): [0.9], ("b", 2): [0.8], ("b", 3): [0.95]})
    unpaired = win_matrix(select(RunStore(str(tmp_path)), Selection("e")), metric="test_accuracy")
    assert unpaired.pairing == "all pairs" and unpaired.cells[0].pairs == 2
    with pytest.raises(InvalidRequest, match="win metric 'speed'"):
        win_matrix(groups, metric="speed")


# ------------------------------------------------ dead units and gradient flow

LAYER_TABLE = [
    {"name": "features.0.conv", "kind": "conv", "params": 10},
    {"name": "features.0.bn", "kind": "batch_norm", "params": 4},
    {"name": "features.0.act", "kind": "activation", "params": 0},
    {"name": "features.1.conv", "kind": "conv", "params": 10},
    {"name": "features.1.bn", "kind": "batch_norm", "params": 4},
    {"name": "features.1.act", "kind": "activation", "params": 0},
    {"name": "head.fc", "kind": "linear", "params": 10},
]


def bn_epoch(epoch: int, dead: tuple[float, float]) -> dict[str, Any]:
    norms = [
        ("features.0.conv", 0.01), ("features.0.bn", 1.0), ("features.1.conv", 0.1),
        ("features.1.bn", 5.0), ("head.fc", 1.0),
    ]  # fmt: skip
    record = epoch_line(
        epoch,
        0.5,
        dead_units=[
            {"layer": "features.0.act", "fraction": dead[0]},
            {"layer": "features.1.act", "fraction": dead[1]},
        ],
    )
    record["grad_norms"] = [{"layer": n, "norm": v} for n, v in norms]
    return record


@pytest.mark.parametrize("with_table", [True, False])
def test_gradient_flow_puts_weight_layers_on_the_depth_axis(
    tmp_path: Path, with_table: bool
) -> None:
    write_run(
        tmp_path,
        "bn",
        "r",
        config=run_config("adam", 1),
        layers=LAYER_TABLE if with_table else None,  # without: kinds from the names
        epochs=[bn_epoch(1, (0.0, 0.1)), bn_epoch(2, (0.2, 0.5))],
        summary=summary(0.5, 2),
    )
    [flow] = gradient_flow(select(RunStore(str(tmp_path)), Selection("bn")))
    assert [(f.layer, f.kind, f.depth) for f in flow.layers] == [
        ("features.0.conv", "conv", 1),
        ("features.0.bn", "batch_norm", 0),
        ("features.1.conv", "conv", 2),
        ("features.1.bn", "batch_norm", 0),
        ("head.fc", "linear", 3),
    ]
    assert [f.layer for f in flow.weight_layers] == [
        "features.0.conv",
        "features.1.conv",
        "head.fc",
    ]
    assert (flow.first_layer, flow.last_layer) == ("features.0.conv", "head.fc")
    assert flow.ratio == pytest.approx(0.01) and flow.ratio_by_epoch == pytest.approx((0.01, 0.01))


def test_dead_units_per_layer_and_epoch(tmp_path: Path) -> None:
    for seed, dead in ((1, [(0.0, 0.1), (0.2, 0.5)]), (2, [(0.0, 0.3), (0.4, 0.7)])):
        write_run(
            tmp_path,
            "d",
            f"s{seed}",
            config=run_config("relu", seed),
            layers=LAYER_TABLE,
            epochs=[bn_epoch(i + 1, d) for i, d in enumerate(dead)],
            summary=summary(0.5, 2),
        )
    [group] = dead_units(select(RunStore(str(tmp_path)), Selection("d")).runs)
    first, second = group.layers
    assert (first.layer, first.kind, second.layer) == (
        "features.0.act",
        "activation",
        "features.1.act",
    )
    assert first.mean == pytest.approx((0.0, 0.3)) and second.mean == pytest.approx((0.2, 0.6))
    assert second.std[1] == pytest.approx(math.sqrt(0.02))
    assert group.mean_by_epoch == pytest.approx((0.1, 0.45))
    assert group.epochs == (1, 2) and group.runs == 2


# --------------------------------------------------------------- stopped runs


def test_a_stopped_run_counts_as_not_reaching_the_target(tmp_path: Path) -> None:
    config = run_config("sgd", 2) | {"training": {"epochs": 10}}
    stopped = summary(None, 2, status="stopped", reason="asha: below the median")
    stopped |= {"stopped_by": "asha", "stopped_at_epoch": 2}
    write_run(
        tmp_path,
        "e",
        "sgd-stopped",
        config=config,
        epochs=[epoch_line(1, 0.3, elapsed=1.5), epoch_line(2, 0.4, elapsed=3.0)],
        summary=stopped,
    )
    write_curves(tmp_path, "e", {("sgd", 1): [0.5, 0.96, 0.97], ("adam", 1): [0.96, 0.97, 0.98]})
    groups = select(RunStore(str(tmp_path)), Selection("e"))
    assert [r.run_id for r in groups.runs["sgd"]] == ["sgd-s1", "sgd-stopped"]  # never left out
    c = compare(groups)
    sgd = next(g for g in c.groups if g.name == "sgd")
    result = next(r for r in sgd.runs if r.run_id == "sgd-stopped")
    assert (result.status, result.reached_target, result.epochs_to_target) == ("stopped", False, 10)
    assert result.seconds_to_target == pytest.approx(15.0)  # 1.5 s an epoch x 10
    assert sgd.reached_target == 1 and sgd.epochs_to_target.mean == pytest.approx(6.0)
    p = profile(RunStore(str(tmp_path)), [Workload("e")], group_by="optimizer.name")
    sgd_time = next(g for g in p.workloads[0].groups if g.group == "sgd")
    assert (sgd_time.reached, sgd_time.runs, sgd_time.time) == (1, 2, math.inf)  # median(2, inf)
