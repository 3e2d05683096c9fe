"""The GRPCInferenceService servicer: protobuf in, domain calls, protobuf out.

Nothing here decides anything: requests are decoded by `protocol`, served by the
`ModelRepository`, and errors are raised as domain errors that the shared
interceptor maps to status codes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from services.common.errors import InvalidInput, ModelNotFound, ServiceError, Unimplemented
from services.common.status import status_for
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference import protocol
from services.inference.config import check_model_name, parse_version
from services.inference.repository import ModelRepository
from services.inference.stats import Duration

log = logging.getLogger("stride.inference.servicer")

SERVER_NAME = "stride"
EXTENSIONS = (
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "statistics",
)


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Triton RPCs over a ModelRepository."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        version: str,
        serving: Callable[[], bool] = lambda: True,
    ) -> None:
        self.repository = repository
        self.version = version
        self._serving = serving  # False while the server drains

    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._serving() and self.repository.all_ready())

    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        check_model_name(request.name)
        parse_version(request.version)
        return pb.ModelReadyResponse(ready=self.repository.is_ready(request.name, request.version))

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=self.version, extensions=EXTENSIONS
        )

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        model = self.repository.get(request.name, request.version)
        s = model.settings
        batch = [-1] if s.max_batch_size else []

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [
                {"name": t.name, "datatype": t.datatype, "shape": batch + list(t.dims)}
                for t in specs
            ]

        versions = [
            e.version
            for e in self.repository.index(ready_only=True)
            if e.name == model.name and e.version
        ]
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=versions,
            platform=model.config.platform,
            inputs=tensors(s.inputs),
            outputs=tensors(s.outputs),
        )

    def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        model = self.repository.get(request.name, request.version)
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(model.config)
        return response

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        remaining = context.time_remaining()  # huge when the client set no deadline
        deadline = None if remaining is None or remaining > 1e6 else time.perf_counter() + remaining
        decoded = protocol.request_from_proto(request, self.repository.limits.max_bytes_elements)
        result = self.repository.infer(decoded, deadline)
        return protocol.response_to_proto(result)

    def ModelStreamInfer(
        self, request_iterator: Iterator[pb.ModelInferRequest], context: Any
    ) -> Iterator[pb.ModelStreamInferResponse]:
        max_bytes = self.repository.limits.max_bytes_elements
        for request in request_iterator:
            try:
                result = self.repository.infer(protocol.request_from_proto(request, max_bytes))
                yield pb.ModelStreamInferResponse(infer_response=protocol.response_to_proto(result))
            except ServiceError as exc:
                yield pb.ModelStreamInferResponse(error_message=str(exc))
            except Exception as exc:  # report, log, keep the stream open
                _, message, _ = status_for(exc)
                log.exception("ModelStreamInfer failed")
                yield pb.ModelStreamInferResponse(error_message=message)

    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            check_model_name(request.name)
        version = parse_version(request.version)
        if version is not None and not request.name:
            raise InvalidInput("a statistics request with a version needs a model name")
        models = [
            m
            for m in self.repository.models()
            if (not request.name or m.name == request.name)
            and (version is None or m.version == version)
        ]
        if request.name and not models:
            self.repository.get(request.name, request.version)  # raises the precise error
            raise ModelNotFound(f"no statistics for model {request.name!r}")
        response = pb.ModelStatisticsResponse()
        for model in models:
            snap = model.stats.snapshot()
            stats = response.model_stats.add(
                name=model.name,
                version=str(model.version),
                last_inference=snap.last_inference_ms,
                inference_count=snap.inference_count,
                execution_count=snap.execution_count,
            )
            infer = stats.inference_stats
            infer.success.CopyFrom(_duration(snap.success))
            infer.fail.CopyFrom(_duration(snap.fail))
            infer.queue.CopyFrom(_duration(snap.queue))
            infer.compute_input.CopyFrom(_duration(snap.compute_input))
            infer.compute_infer.CopyFrom(_duration(snap.compute_infer))
            infer.compute_output.CopyFrom(_duration(snap.compute_output))
            for size, b in snap.batches.items():
                stats.batch_stats.add(
                    batch_size=size,
                    compute_input=_duration(b.compute_input),
                    compute_infer=_duration(b.compute_infer),
                    compute_output=_duration(b.compute_output),
                )
        return response

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        for entry in self.repository.index(ready_only=request.ready):
            response.models.add(
                name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
            )
        return response

    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        if request.parameters:
            raise Unimplemented(
                f"load parameters {sorted(request.parameters)} are not supported: edit the "
                "model's files in the repository and load it again"
            )
        self.repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        unknown = sorted(set(request.parameters) - {"unload_dependents"})
        if unknown:
            raise InvalidInput(f"unknown unload parameters {unknown}; supported: unload_dependents")
        self.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


# Cheap answers to "alive?" and "ready?": they run on the server's probe threads (see
# services.common.server), so they answer while every handler thread is busy.
PROBES = ("ServerLive", "ServerReady", "ModelReady")


def add_to_server(servicer: InferenceServicer, server: grpc.Server) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
