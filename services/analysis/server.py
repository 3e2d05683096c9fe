"""Build the analysis server on the shared lifecycle of services.common."""

from __future__ import annotations

from runstore import RunStore
from services.analysis.servicer import SERVICE_NAME, AnalysisServicer
from services.common import ManagedServer, ServerOptions, Service
from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc


class AnalysisServer(ManagedServer):
    """ManagedServer hosting AnalysisService; on stop, WatchRun streams end before the drain.

    Its calls are plain functions: the server runs them on its handler threads, and each
    WatchRun stream on a stream thread of its own (services.common.calls)."""

    def __init__(self, store: RunStore, options: ServerOptions) -> None:
        self.servicer = AnalysisServicer(store)
        service = Service(
            SERVICE_NAME,
            lambda server: pb_grpc.add_AnalysisServiceServicer_to_server(self.servicer, server),
        )
        super().__init__([service], options)

    def stop(self, grace: float | None = None) -> None:
        """End open streams (they would otherwise hold the drain for the whole grace period)."""
        self.servicer.close()
        super().stop(grace)
