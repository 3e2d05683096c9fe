"""The AnalysisService servicer: protobuf in, domain calls, protobuf out.

Errors are raised, not aborted: the shared interceptor (services.common) maps
the domain errors to status codes in one place.

Expensive calls run in lanes (services.analysis.lanes): RenderComparison in one, the
comparisons in another, each a bounded queue that refuses past its bound and drops
work whose client has gone. The listing calls and GetRun read one run at a time and
run beside them, so they answer while the lanes are full.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from runstore import (
    STATUSES,
    BadName,
    ExperimentNotFound,
    MalformedRun,
    ReaderBusy,
    Run,
    RunNotFound,
    RunStore,
    check_read_name,
)
from services.analysis import analyses, convert, convert_analyses, plots
from services.analysis import compare as cmp
from services.analysis.errors import InvalidRequest
from services.analysis.lanes import CallLimits, Lane, peer_key
from services.analysis.layers import dead_units
from services.analysis.store import run_matcher
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
    (ReaderBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
):
    if _error not in STATUS_FOR_ERROR:
        register_error(_error, _code)
# A WatchRun without a deadline still ends: a client that forgot one must not pin a
# server thread for ever.
MAX_WATCH_SECONDS = 3600.0
T = TypeVar("T")
Request = TypeVar("Request")


def per_client(
    method: Callable[[AnalysisServicer, Request, grpc.ServicerContext], T],
) -> Callable[[AnalysisServicer, Request, grpc.ServicerContext], T]:
    """Count the runs a call parses against its client's share of the memory budget
    (runstore.budget.ClientShares): one client cannot take the whole budget."""

    @functools.wraps(method)
    def call(self: AnalysisServicer, request: Request, context: grpc.ServicerContext) -> T:
        with self.store.shares.client(peer_key(context)):
            return method(self, request, context)

    return call


class AnalysisServicer(pb_grpc.AnalysisServiceServicer):
    """Answers AnalysisService calls from a run store."""

    def __init__(
        self,
        store: RunStore,
        *,
        max_watch_seconds: float = MAX_WATCH_SECONDS,
        limits: CallLimits | None = None,
    ) -> None:
        self.store = store
        self.max_watch_seconds = max_watch_seconds
        self._closed = threading.Event()
        self._wakes: set[threading.Event] = set()  # one per WatchRun in flight
        self._watch_lock = threading.Lock()
        limits = limits or CallLimits()
        # matplotlib's font and text caches are shared state: one figure at a time.
        self.renders = Lane(
            "RenderComparison", workers=1, queue=limits.render_queue, flag="--max-queued-renders"
        )
        self.analyses = Lane(
            "comparison",
            workers=limits.analysis_workers,
            queue=limits.analysis_queue,
            flag="--max-queued-analyses",
        )
        self.lanes = (self.renders, self.analyses)

    def close(self) -> None:
        """On shutdown: end the WatchRun streams in flight at once (each one's wait
        between polls is woken, not left to run out) and refuse the calls waiting in the
        lanes; the calls running go on for the grace period."""
        self._closed.set()
        for lane in self.lanes:
            lane.close()
        with self._watch_lock:
            for wake in self._wakes:
                wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no lane runs a call (True) or `timeout` seconds pass (False)."""
        end = time.monotonic() + timeout
        return all(lane.wait_idle(max(0.0, end - time.monotonic())) for lane in self.lanes)

    def _compute(self, context: grpc.ServicerContext, work: Callable[[Callable[[], None]], T]) -> T:
        return self.analyses.run(context, work)

    @per_client
    def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.ServicerContext
    ) -> pb.ListExperimentsResponse:
        out = pb.ListExperimentsResponse()
        for name in self.store.experiments():
            counts = dict.fromkeys(STATUSES, 0)
            malformed = 0
            for _, status in self.store.each_status(name):  # parses only what changed
                if status is None:
                    malformed += 1
                else:
                    counts[status] = counts.get(status, 0) + 1
            out.experiments.append(
                pb.ExperimentInfo(
                    name=name,
                    runs=sum(counts.values()),
                    completed=counts["completed"],
                    failed=counts["failed"],
                    running=counts["running"],
                    malformed=malformed,
                    stopped=counts["stopped"],
                )
            )
        return out

    @per_client
    def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListRunsResponse:
        experiment = _required(request.experiment, "experiment")
        matches = run_matcher(statuses=request.statuses, where=request.where)
        out = pb.ListRunsResponse()
        for item in self.store.each_run(experiment):  # one parsed run held at a time
            if isinstance(item, Run):
                if matches(item):
                    out.runs.append(convert.run_info(item))
            else:
                out.malformed.append(convert.skipped(item))
            del item  # not held while the next one is read
        return out

    @per_client
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

    @per_client
    def CompareRuns(
        self, request: pb.CompareRunsRequest, context: grpc.ServicerContext
    ) -> pb.CompareRunsResponse:
        convert.no_bootstrap(request)
        selection = convert.selection(request.selection)

        def work(check: Callable[[], None]) -> pb.CompareRunsResponse:
            groups = cmp.select(self.store, selection)
            check()
            comparison = cmp.compare(
                groups,
                target=request.target if request.HasField("target") else cmp.DEFAULT_TARGET,
                rank_by=request.rank_by or cmp.DEFAULT_RANK_BY,
            )
            check()
            return convert.comparison(comparison)

        return self._compute(context, work)

    @per_client
    def GradientFlow(
        self, request: pb.GradientFlowRequest, context: grpc.ServicerContext
    ) -> pb.GradientFlowResponse:
        selection = convert.selection(request.selection)

        def work(check: Callable[[], None]) -> pb.GradientFlowResponse:
            groups = cmp.select(self.store, selection)
            check()
            return convert.gradient_flow(cmp.gradient_flow(groups), groups.skipped)

        return self._compute(context, work)

    @per_client
    def RenderComparison(
        self, request: pb.RenderComparisonRequest, context: grpc.ServicerContext
    ) -> pb.RenderComparisonResponse:
        selection = convert.selection(request.selection)
        width = request.width or plots.DEFAULT_WIDTH
        height = request.height or plots.DEFAULT_HEIGHT
        dpi = request.dpi or plots.DEFAULT_DPI
        plots.check_size(width, height, dpi)  # a bad size is refused before it queues

        def work(check: Callable[[], None]) -> bytes:
            groups = cmp.select(self.store, selection)
            check()
            extras = analyses.extras(self.store, request, groups)
            check()
            return plots.render_png(
                groups,
                cmp.gradient_flow(groups),
                width=width,
                height=height,
                dpi=dpi,
                extras=extras,
                check=check,
            )

        png = self.renders.run(context, work)
        return pb.RenderComparisonResponse(
            png=png, width=width, height=height, content_type="image/png"
        )

    @per_client
    def PerformanceProfile(
        self, request: pb.PerformanceProfileRequest, context: grpc.ServicerContext
    ) -> pb.PerformanceProfileResponse:
        return self._compute(
            context, lambda check: convert_analyses.profile(analyses.profile(self.store, request))
        )

    @per_client
    def LearningRateSensitivity(
        self, request: pb.LearningRateSensitivityRequest, context: grpc.ServicerContext
    ) -> pb.LearningRateSensitivityResponse:
        selection = convert.selection(request.selection)

        def work(check: Callable[[], None]) -> pb.LearningRateSensitivityResponse:
            groups = cmp.select(self.store, selection)
            check()
            return convert_analyses.sensitivity(analyses.sensitivity(groups, request))

        return self._compute(context, work)

    @per_client
    def ExpectedBest(
        self, request: pb.ExpectedBestRequest, context: grpc.ServicerContext
    ) -> pb.ExpectedBestResponse:
        selection = convert.selection(request.selection)

        def work(check: Callable[[], None]) -> pb.ExpectedBestResponse:
            groups = cmp.select(self.store, selection)
            check()
            return convert_analyses.expected_best(analyses.expected_best(groups, request))

        return self._compute(context, work)

    @per_client
    def WinMatrix(
        self, request: pb.WinMatrixRequest, context: grpc.ServicerContext
    ) -> pb.WinMatrixResponse:
        selection = convert.selection(request.selection)

        def work(check: Callable[[], None]) -> pb.WinMatrixResponse:
            groups = cmp.select(self.store, selection)
            check()
            return convert_analyses.win_matrix(analyses.win_matrix(groups, request))

        return self._compute(context, work)

    @per_client
    def DeadUnits(
        self, request: pb.DeadUnitsRequest, context: grpc.ServicerContext
    ) -> pb.DeadUnitsResponse:
        selection = convert.selection(request.selection)

        def work(check: Callable[[], None]) -> pb.DeadUnitsResponse:
            groups = cmp.select(self.store, selection)
            check()
            return convert_analyses.dead_units(dead_units(groups.runs), groups.skipped)

        return self._compute(context, work)

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
            with self.store.shares.client(peer_key(context)):  # its read of the run
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
