"""The newer analyses (profiles, learning-rate sensitivity, expected best, win matrix,
dead units) to protobuf messages and their requests to domain options."""

from __future__ import annotations

from collections.abc import Sequence

from runstore import Skipped
from services.analysis.convert import skipped
from services.analysis.layers import GroupDeadUnits, LayerFlow
from services.analysis.profiles import Profile, Workload
from services.analysis.sensitivity import Sensitivity
from services.analysis.stats import WinProbability
from services.analysis.tuning import ExpectedBest
from services.analysis.wins import WinMatrix
from services.generated.stride.analysis.v1 import analysis_pb2 as pb


def layer_series(layer: LayerFlow) -> pb.LayerSeries:
    """A LayerSeries message."""
    return pb.LayerSeries(
        layer=layer.layer,
        mean=list(layer.mean),
        std=list(layer.std),
        kind=layer.kind,
        depth=layer.depth,
    )


def workloads(request: pb.PerformanceProfileRequest) -> list[Workload]:
    """The workloads of a profile request."""
    return [
        Workload(w.experiment, w.target if w.HasField("target") else None)
        for w in request.workloads
    ]


def profile(value: Profile) -> pb.PerformanceProfileResponse:
    """A PerformanceProfileResponse."""
    return pb.PerformanceProfileResponse(
        group_by=value.group_by,
        metric=value.metric,
        time=value.time,
        tau_max=value.tau_max,
        tau=list(value.taus),
        groups=[
            pb.ProfileCurve(
                group=c.group, rho=list(c.rho), score=c.score, log_tau_area=c.log_tau_area
            )
            for c in value.curves
        ],
        workloads=[
            pb.WorkloadResult(
                experiment=w.experiment,
                target=w.target,
                best_group=w.best_group,
                groups=[
                    pb.GroupTime(
                        group=g.group, runs=g.runs, reached=g.reached, time=g.time, ratio=g.ratio
                    )
                    for g in w.groups
                ],
            )
            for w in value.workloads
        ],
        skipped=_skipped(value.skipped),
    )


def sensitivity(value: Sensitivity) -> pb.LearningRateSensitivityResponse:
    """A LearningRateSensitivityResponse."""
    groups = []
    for curve in value.curves:
        points = []
        for p in curve.points:
            point = pb.SensitivityPoint(
                lr=p.lr,
                n=p.n,
                mean=p.mean,
                low=p.low,
                high=p.high,
                run_ids=list(p.run_ids),
                diverged=p.diverged,
            )
            if p.std is not None:
                point.std = p.std
            points.append(point)
        groups.append(
            pb.SensitivityCurve(
                name=curve.name, points=points, best_lr=curve.best_lr, best_mean=curve.best_mean
            )
        )
    return pb.LearningRateSensitivityResponse(
        experiment=value.experiment,
        group_by=value.group_by,
        metric=value.metric,
        lr_key=value.lr_key,
        groups=groups,
        skipped=_skipped(value.skipped),
    )


def expected_best(value: ExpectedBest) -> pb.ExpectedBestResponse:
    """An ExpectedBestResponse."""
    return pb.ExpectedBestResponse(
        experiment=value.experiment,
        group_by=value.group_by,
        metric=value.metric,
        groups=[
            pb.ExpectedBestCurve(
                name=c.name, trials=c.trials, k=list(c.ks), mean=list(c.mean), diverged=c.diverged
            )
            for c in value.curves
        ],
        skipped=_skipped(value.skipped),
    )


def _cell(value: WinProbability) -> pb.PairwiseWin:
    out = pb.PairwiseWin(a=value.a, b=value.b, pairs=value.pairs, paired_by_seed=value.paired)
    if value.probability is not None:
        out.probability = value.probability
    return out


def win_matrix(value: WinMatrix) -> pb.WinMatrixResponse:
    """A WinMatrixResponse."""
    return pb.WinMatrixResponse(
        experiment=value.experiment,
        group_by=value.group_by,
        metric=value.metric,
        target=value.target,
        groups=list(value.groups),
        cells=[_cell(c) for c in value.cells],
        pairing=value.pairing,
        skipped=_skipped(value.skipped),
    )


def dead_units(
    groups: Sequence[GroupDeadUnits], left_out: Sequence[Skipped]
) -> pb.DeadUnitsResponse:
    """A DeadUnitsResponse."""
    return pb.DeadUnitsResponse(
        groups=[
            pb.GroupDeadUnits(
                name=g.name,
                runs=g.runs,
                epochs=list(g.epochs),
                layers=[layer_series(layer) for layer in g.layers],
                mean_by_epoch=list(g.mean_by_epoch),
            )
            for g in groups
        ],
        skipped=_skipped(left_out),
    )


def _skipped(values: Sequence[Skipped]) -> list[pb.SkippedRun]:
    return [skipped(s) for s in values]
