"""Requests of the newer analyses to domain calls, with their defaults: what the
servicer's PerformanceProfile, LearningRateSensitivity, ExpectedBest, WinMatrix and
RenderComparison's extra panels share."""

from __future__ import annotations

from runstore import RunStore
from services.analysis import compare as cmp
from services.analysis import convert, convert_analyses
from services.analysis.layers import dead_units
from services.analysis.options import (
    DEFAULT_EXPECTED_BEST_METRIC,
    DEFAULT_LR_KEY,
    DEFAULT_PROFILE_METRIC,
    DEFAULT_PROFILE_TIME,
    DEFAULT_SENSITIVITY_METRIC,
    DEFAULT_TAU_MAX,
    DEFAULT_TAU_POINTS,
)
from services.analysis.panels import Extras
from services.analysis.profiles import Profile, Workload
from services.analysis.profiles import profile as compute_profile
from services.analysis.sensitivity import Sensitivity
from services.analysis.sensitivity import sensitivity as compute_sensitivity
from services.analysis.tuning import ExpectedBest
from services.analysis.tuning import expected_best as compute_expected_best
from services.analysis.wins import WinMatrix
from services.analysis.wins import win_matrix as compute_win_matrix
from services.generated.stride.analysis.v1 import analysis_pb2 as pb


def profile(
    store: RunStore, request: pb.PerformanceProfileRequest, default: cmp.Selection | None = None
) -> Profile:
    """PerformanceProfile; `default` (RenderComparison's selection) fills in the
    workloads and grouping a request left empty."""
    workloads = convert_analyses.workloads(request)
    if not workloads and default is not None:
        workloads = [Workload(default.experiment)]
    for w in workloads:
        if not w.experiment:
            raise cmp.InvalidRequest("a workload's experiment is required")
    group_by = request.group_by or (default.group_by if default else cmp.DEFAULT_GROUP_BY)
    return compute_profile(
        store,
        workloads,
        group_by=group_by,
        where=tuple(request.where) or (tuple(default.where) if default else ()),
        include_unfinished=request.include_unfinished,
        metric=request.metric or DEFAULT_PROFILE_METRIC,
        target=request.target if request.HasField("target") else None,
        time=request.time or DEFAULT_PROFILE_TIME,
        tau_max=request.tau_max or DEFAULT_TAU_MAX,
        points=request.points or DEFAULT_TAU_POINTS,
    )


def sensitivity(groups: cmp.Groups, request: pb.LearningRateSensitivityRequest) -> Sensitivity:
    """LearningRateSensitivity on groups already selected."""
    return compute_sensitivity(
        groups,
        metric=request.metric or DEFAULT_SENSITIVITY_METRIC,
        lr_key=request.lr_key or DEFAULT_LR_KEY,
    )


def expected_best(groups: cmp.Groups, request: pb.ExpectedBestRequest) -> ExpectedBest:
    """ExpectedBest on groups already selected."""
    convert.no_bootstrap(request)
    return compute_expected_best(
        groups, metric=request.metric or DEFAULT_EXPECTED_BEST_METRIC, k=request.k
    )


def win_matrix(groups: cmp.Groups, request: pb.WinMatrixRequest) -> WinMatrix:
    """WinMatrix on groups already selected."""
    return compute_win_matrix(
        groups,
        metric=request.metric or cmp.DEFAULT_RANK_BY,
        target=request.target if request.HasField("target") else cmp.DEFAULT_TARGET,
    )


def extras(store: RunStore, request: pb.RenderComparisonRequest, groups: cmp.Groups) -> Extras:
    """The extra panels a RenderComparison asks for (dead units whenever runs have them)."""
    default = convert.selection(request.selection)

    def groups_of(selection: pb.RunSelection) -> cmp.Groups:
        if not selection.experiment:
            return groups
        return cmp.select(store, convert.selection(selection))

    return Extras(
        dead_units=dead_units(groups.runs),
        profile=profile(store, request.profile, default) if request.HasField("profile") else None,
        sensitivity=(
            sensitivity(groups_of(request.sensitivity.selection), request.sensitivity)
            if request.HasField("sensitivity")
            else None
        ),
        expected_best=(
            expected_best(groups_of(request.expected_best.selection), request.expected_best)
            if request.HasField("expected_best")
            else None
        ),
        win_matrix=(
            win_matrix(groups_of(request.win_matrix.selection), request.win_matrix)
            if request.HasField("win_matrix")
            else None
        ),
    )
