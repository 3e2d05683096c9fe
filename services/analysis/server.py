"""Build the analysis server on the shared lifecycle of services.common."""

from __future__ import annotations

from runstore import RunStore
from services.analysis.health import HealthMonitor
from services.analysis.lanes import CallLimits
from services.analysis.servicer import SERVICE_NAME, AnalysisServicer
from services.common import ManagedServer, ServerOptions, Service
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc

# After the drain, how long the process waits for a call that is still drawing or
# computing to reach its next step and stop, before it leaves it behind.
ABANDON_SECONDS = 5.0


class AnalysisServer(ManagedServer):
    """ManagedServer hosting AnalysisService. Health reports what the service can do
    (services.analysis.health); on stop, WatchRun streams end and queued calls are
    refused before the drain, so only the calls already running use the grace period.
    Calls are plain functions on the handler threads; each WatchRun stream has a stream
    thread of its own (services.common.calls)."""

    def __init__(
        self, store: RunStore, options: ServerOptions, limits: CallLimits | None = None
    ) -> None:
        self.servicer = AnalysisServicer(store, limits=limits)
        service = Service(
            SERVICE_NAME,
            lambda server: pb_grpc.add_AnalysisServiceServicer_to_server(self.servicer, server),
        )
        super().__init__([service], options)
        self.monitor = HealthMonitor(store, self.servicer.lanes, self._report)

    def start(self) -> AnalysisServer:
        """Start serving, then watching the service's health."""
        super().start()
        self.monitor.start()
        return self

    def _report(self, serving: bool, reason: str) -> None:
        for name in ("", SERVICE_NAME):
            self.set_health(name, serving)

    def stop(self, grace: float | None = None) -> None:
        """End open streams and refuse queued calls (they would otherwise hold the drain
        for the whole grace period), then drain the calls running."""
        self.monitor.stop()
        self.servicer.close()
        super().stop(grace)

    def finished(self, timeout: float = ABANDON_SECONDS) -> bool:
        """After `stop`: whether every call that was running has stopped (waiting up to
        `timeout` seconds for them to reach their next step)."""
        return self.servicer.wait_idle(timeout)
