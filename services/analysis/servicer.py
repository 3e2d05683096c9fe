"""The AnalysisService servicer: protobuf in, domain calls, protobuf out.

Errors are raised, not aborted: the shared interceptor (services.common) maps
the domain errors to status codes in one place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from runstore import (
    STATUSES,
    BadName,
    ExperimentNotFound,
    MalformedRun,
    RunNotFound,
    RunStore,
    check_read_name,
)
from services.analysis import analyses, convert, convert_analyses, plots
from services.analysis import compare as cmp
from services.analysis.errors import InvalidRequest
from services.analysis.layers import dead_units
from services.analysis.store import select_runs
from services.analysis.watch import watch
from services.common.status import STATUS_FOR_ERROR, register_error
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc

SERVICE_NAME = "stride.analysis.v1.AnalysisService"
# The run store's errors are plain ValueError / LookupError families; their codes here.
for _error, _code in (
    (BadName, grpc.StatusCode.INVALID_ARGUMENT),
    (MalformedRun, grpc.StatusCode.FAILED_PRECONDITION),
    (ExperimentNotFound, grpc.StatusCode.NOT_FOUND),
    (RunNotFound, grpc.StatusCode.NOT_FOUND),
):
    if _error not in STATUS_FOR_ERROR:
        register_error(_error, _code)
# A WatchRun without a deadline still ends: a client that forgot one must not pin a
# server thread for ever.
MAX_WATCH_SECONDS = 3600.0


class AnalysisServicer(pb_grpc.AnalysisServiceServicer):
    """Answers AnalysisService calls from a run store."""

    def __init__(self, store: RunStore, *, max_watch_seconds: float = MAX_WATCH_SECONDS) -> None:
        self.store = store
        self.max_watch_seconds = max_watch_seconds
        self._closed = threading.Event()
        self._wakes: set[threading.Event] = set()  # one per WatchRun in flight
        self._watch_lock = threading.Lock()
        # matplotlib's font and text caches are shared state: one figure at a time.
        self._render_lock = threading.Lock()

    def close(self) -> None:
        """End the WatchRun streams in flight at once (called on shutdown): each one's
        wait between polls is woken, not left to run out."""
        self._closed.set()
        with self._watch_lock:
            for wake in self._wakes:
                wake.set()

    def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.ServicerContext
    ) -> pb.ListExperimentsResponse:
        out = pb.ListExperimentsResponse()
        for name in self.store.experiments():
            scan = self.store.scan(name)
            counts = {s: sum(r.status == s for r in scan.runs) for s in STATUSES}
            out.experiments.append(
                pb.ExperimentInfo(
                    name=name,
                    runs=len(scan.runs),
                    completed=counts["completed"],
                    failed=counts["failed"],
                    running=counts["running"],
                    malformed=len(scan.malformed),
                    stopped=counts["stopped"],
                )
            )
        return out

    def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListRunsResponse:
        scan = self.store.scan(_required(request.experiment, "experiment"))
        runs = select_runs(scan.runs, statuses=request.statuses, where=request.where)
        return pb.ListRunsResponse(
            runs=[convert.run_info(r) for r in runs],
            malformed=[convert.skipped(s) for s in scan.malformed],
        )

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.GetRunResponse:
        run = self.store.run(
            _required(request.experiment, "experiment"), _required(request.run_id, "run_id")
        )
        return convert.get_run(
            run,
            first_epoch=request.first_epoch,
            last_epoch=request.last_epoch,
            grad_norms=not request.without_grad_norms,
        )

    def CompareRuns(
        self, request: pb.CompareRunsRequest, context: grpc.ServicerContext
    ) -> pb.CompareRunsResponse:
        convert.no_bootstrap(request)
        groups = cmp.select(self.store, convert.selection(request.selection))
        comparison = cmp.compare(
            groups,
            target=request.target if request.HasField("target") else cmp.DEFAULT_TARGET,
            rank_by=request.rank_by or cmp.DEFAULT_RANK_BY,
        )
        return convert.comparison(comparison)

    def GradientFlow(
        self, request: pb.GradientFlowRequest, context: grpc.ServicerContext
    ) -> pb.GradientFlowResponse:
        groups = cmp.select(self.store, convert.selection(request.selection))
        return convert.gradient_flow(cmp.gradient_flow(groups), groups.skipped)

    def RenderComparison(
        self, request: pb.RenderComparisonRequest, context: grpc.ServicerContext
    ) -> pb.RenderComparisonResponse:
        groups = cmp.select(self.store, convert.selection(request.selection))
        width = request.width or plots.DEFAULT_WIDTH
        height = request.height or plots.DEFAULT_HEIGHT
        extras = analyses.extras(self.store, request, groups)
        with self._render_lock:
            png = plots.render_png(
                groups,
                cmp.gradient_flow(groups),
                width=width,
                height=height,
                dpi=request.dpi or plots.DEFAULT_DPI,
                extras=extras,
            )
        return pb.RenderComparisonResponse(
            png=png, width=width, height=height, content_type="image/png"
        )

    def PerformanceProfile(
        self, request: pb.PerformanceProfileRequest, context: grpc.ServicerContext
    ) -> pb.PerformanceProfileResponse:
        return convert_analyses.profile(analyses.profile(self.store, request))

    def LearningRateSensitivity(
        self, request: pb.LearningRateSensitivityRequest, context: grpc.ServicerContext
    ) -> pb.LearningRateSensitivityResponse:
        groups = cmp.select(self.store, convert.selection(request.selection))
        return convert_analyses.sensitivity(analyses.sensitivity(groups, request))

    def ExpectedBest(
        self, request: pb.ExpectedBestRequest, context: grpc.ServicerContext
    ) -> pb.ExpectedBestResponse:
        groups = cmp.select(self.store, convert.selection(request.selection))
        return convert_analyses.expected_best(analyses.expected_best(groups, request))

    def WinMatrix(
        self, request: pb.WinMatrixRequest, context: grpc.ServicerContext
    ) -> pb.WinMatrixResponse:
        groups = cmp.select(self.store, convert.selection(request.selection))
        return convert_analyses.win_matrix(analyses.win_matrix(groups, request))

    def DeadUnits(
        self, request: pb.DeadUnitsRequest, context: grpc.ServicerContext
    ) -> pb.DeadUnitsResponse:
        groups = cmp.select(self.store, convert.selection(request.selection))
        return convert_analyses.dead_units(dead_units(groups.runs), groups.skipped)

    def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchRunResponse]:
        experiment = check_read_name("experiment", _required(request.experiment, "experiment"))
        run_id = check_read_name("run id", _required(request.run_id, "run_id"))
        remaining = context.time_remaining()
        budget = self.max_watch_seconds if remaining is None else min(remaining, 1e9)
        wake = threading.Event()
        context.add_callback(wake.set)  # cancelled or timed out: stop waiting at once
        with self._watch_lock:
            self._wakes.add(wake)
        if self._closed.is_set():
            wake.set()
        try:
            events = watch(
                self.store,
                experiment,
                run_id,
                after_epoch=request.after_epoch,
                poll_seconds=request.poll_seconds,
                wait=wake.wait,
                active=lambda: context.is_active() and not wake.is_set(),
                deadline=time.monotonic() + min(budget, self.max_watch_seconds),
            )
            for event in events:
                out = pb.WatchRunResponse()
                if event.epoch is not None:
                    out.epoch.CopyFrom(convert.epoch(event.epoch))
                if event.summary is not None:
                    out.summary.CopyFrom(convert.summary(event.summary))
                if event.warning is not None:
                    out.warnings.append(event.warning)
                yield out
        finally:
            with self._watch_lock:
                self._wakes.discard(wake)


def _required(value: Any, name: str) -> str:
    if not value:
        raise InvalidRequest(f"{name} is required")
    return str(value)
