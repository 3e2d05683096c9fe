"""The newer AnalysisService RPCs in-process, on synthetic stores with known answers;
bad input is INVALID_ARGUMENT with a message naming what is missing."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest

from runstore import RunStore
from services.analysis.errors import InvalidRequest
from services.analysis.servicer import AnalysisServicer
from services.common.status import STATUS_FOR_ERROR
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from tests.services.analysis.conftest import FakeContext
from tests.services.analysis.pngs import png_size
from tests.services.analysis.runstore import epoch_line, run_config, summary, write_run
from tests.services.analysis.test_analyses import LAYER_TABLE, bn_epoch, lr_store, profile_store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    lr_store(tmp_path)
    profile_store(tmp_path)
    write_run(
        tmp_path,
        "lr",
        "adam-stopped",
        config=run_config("adam", 9) | {"optimizer": {"name": "adam", "lr": 0.1}},
        epochs=[epoch_line(1, 0.2)],
        summary=summary(None, 1, status="stopped", reason="asha"),
    )
    for seed in (1, 2):
        write_run(
            tmp_path,
            "dead",
            f"relu-s{seed}",
            config=run_config("adam", seed),
            layers=LAYER_TABLE,
            epochs=[bn_epoch(1, (0.0, 0.1)), bn_epoch(2, (0.2, 0.4))],
            summary=summary(0.5, 2),
        )
    return tmp_path


def selection(experiment: str, **kwargs: object) -> pb.RunSelection:
    return pb.RunSelection(experiment=experiment, **kwargs)  # type: ignore[arg-type]


def test_invalid_request_is_invalid_argument() -> None:
    assert STATUS_FOR_ERROR[InvalidRequest.__mro__[1]] == grpc.StatusCode.INVALID_ARGUMENT


def test_list_experiments_counts_stopped_runs(store: Path, context: FakeContext) -> None:
    out = AnalysisServicer(RunStore(str(store))).ListExperiments(
        pb.ListExperimentsRequest(), context
    )
    lr = {e.name: e for e in out.experiments}["lr"]
    assert (lr.runs, lr.completed, lr.stopped) == (13, 12, 1)


def test_performance_profile(store: Path, context: FakeContext) -> None:
    servicer = AnalysisServicer(RunStore(str(store)))
    request = pb.PerformanceProfileRequest(
        workloads=[pb.Workload(experiment="w1"), pb.Workload(experiment="w2", target=0.9)],
        target=0.9,
        points=5,
    )
    out = servicer.PerformanceProfile(request, context)
    assert (out.metric, out.time, out.tau_max, out.group_by) == (
        "val_accuracy",
        "epochs",
        4.0,
        "optimizer.name",
    )
    assert list(out.tau) == pytest.approx([1.0, 4**0.25, 4**0.5, 4**0.75, 4.0])
    assert [g.group for g in out.groups] == ["a", "c", "b"]
    assert out.groups[2].score == pytest.approx(1 / 3)  # b: ratios 2 and inf
    assert out.groups[2].log_tau_area == pytest.approx(0.25)
    w1 = out.workloads[0]
    assert [(g.group, g.ratio) for g in w1.groups] == [("a", 1.0), ("b", 2.0), ("c", math.inf)]
    bad = pb.PerformanceProfileRequest(workloads=[pb.Workload(experiment="w1")], metric="val_loss")
    with pytest.raises(InvalidRequest, match="has no val_loss target"):
        servicer.PerformanceProfile(bad, context)


def test_learning_rate_sensitivity(store: Path, context: FakeContext) -> None:
    servicer = AnalysisServicer(RunStore(str(store)))
    out = servicer.LearningRateSensitivity(
        pb.LearningRateSensitivityRequest(selection=selection("lr")), context
    )
    adam = out.groups[0]
    assert (out.metric, out.lr_key, adam.name, adam.best_lr) == (
        "final_val_accuracy",
        "optimizer.lr",
        "adam",
        0.01,
    )
    # the stopped run counts (never left out) at its own rate
    high = adam.points[2]
    assert (high.lr, high.n, high.low, high.high) == (0.1, 3, 0.2, 0.5)
    with pytest.raises(InvalidRequest, match="no learning-rate axis"):
        servicer.LearningRateSensitivity(
            pb.LearningRateSensitivityRequest(selection=selection("w1")), context
        )


def test_expected_best(store: Path, context: FakeContext) -> None:
    servicer = AnalysisServicer(RunStore(str(store)))
    request = pb.ExpectedBestRequest(selection=selection("lr"), k=3)
    out = servicer.ExpectedBest(request, context)
    assert [(g.name, g.trials, list(g.k)) for g in out.groups] == [
        ("adam", 7, [1, 2, 3]),
        ("sgd", 6, [1, 2, 3]),
    ]
    assert out.metric == "best_val_accuracy"
    assert all(not g.ci_low and not g.ci_high for g in out.groups)  # no interval is given
    with pytest.raises(InvalidRequest, match="no longer used"):
        servicer.ExpectedBest(
            pb.ExpectedBestRequest(selection=selection("lr"), bootstrap_samples=200), context
        )
    with pytest.raises(InvalidRequest, match="k 7 is larger than the 6 trials of group 'sgd'"):
        servicer.ExpectedBest(pb.ExpectedBestRequest(selection=selection("lr"), k=7), context)


def test_win_matrix(store: Path, context: FakeContext) -> None:
    servicer = AnalysisServicer(RunStore(str(store)))
    request = pb.WinMatrixRequest(selection=selection("w1"), metric="best_val_accuracy")
    out = servicer.WinMatrix(request, context)
    assert list(out.groups) == ["a", "b", "c"] and len(out.cells) == 6
    cells = {(c.a, c.b): c for c in out.cells}
    assert cells["a", "b"].probability == 0.5 and cells["a", "c"].probability == 1.0
    assert out.pairing == "paired by seed" and cells["a", "c"].paired_by_seed
    with pytest.raises(InvalidRequest, match="win metric"):
        servicer.WinMatrix(pb.WinMatrixRequest(selection=selection("w1"), metric="x"), context)


def test_dead_units_and_weight_layer_gradient_flow(store: Path, context: FakeContext) -> None:
    servicer = AnalysisServicer(RunStore(str(store)))
    out = servicer.DeadUnits(pb.DeadUnitsRequest(selection=selection("dead")), context)
    [group] = out.groups
    assert [layer.layer for layer in group.layers] == ["features.0.act", "features.1.act"]
    assert list(group.layers[1].mean) == pytest.approx([0.1, 0.4])
    assert list(group.mean_by_epoch) == pytest.approx([0.05, 0.3])
    flow = servicer.GradientFlow(pb.GradientFlowRequest(selection=selection("dead")), context)
    [g] = flow.groups
    assert [(s.kind, s.depth) for s in g.layers][:2] == [("conv", 1), ("batch_norm", 0)]
    assert (g.first_layer, g.last_layer, g.log10_ratio) == (
        "features.0.conv",
        "head.fc",
        pytest.approx(-2.0),
    )


def test_render_comparison_draws_the_extra_panels(store: Path, context: FakeContext) -> None:
    servicer = AnalysisServicer(RunStore(str(store)))
    request = pb.RenderComparisonRequest(
        selection=selection("lr"),
        width=900,
        height=900,
        profile=pb.PerformanceProfileRequest(target=0.9),
        sensitivity=pb.LearningRateSensitivityRequest(),
        expected_best=pb.ExpectedBestRequest(),
        win_matrix=pb.WinMatrixRequest(selection=selection("w1")),
    )
    out = servicer.RenderComparison(request, context)
    assert png_size(out.png) == (900, 900)
    request.ClearField("profile")
    request.sensitivity.selection.CopyFrom(selection("w1"))
    with pytest.raises(InvalidRequest, match="no learning-rate axis"):
        servicer.RenderComparison(request, context)
