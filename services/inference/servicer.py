"""The GRPCInferenceService servicer: protobuf in, domain calls, protobuf out.

Nothing here decides anything: requests are decoded by `protocol`, answered by the
`InferenceCore` (which the REST front end shares), and errors are raised as domain
errors that the server's call gate (services.common.calls) maps to status codes.

ModelInfer and ModelStreamInfer are coroutines on the server's event loop (a model's
run is awaited from the dynamic batcher); the other methods are plain functions that
the call gate runs on its handler threads, except the probes (`PROBES`), which answer
on the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common.errors import ServiceError
from services.common.status import status_for
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from services.inference import protocol
from services.inference.core import InferenceCore
from services.inference.protocol import ParameterCounts
from services.inference.repository import ModelRepository
from services.inference.stats import Duration
from services.inference.tensors import BYTES, InferRequest, InferResult

log = logging.getLogger("stride.inference.servicer")


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Triton RPCs over an InferenceCore (built over `repository`)."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        version: str,
        serving: Callable[[], bool] = lambda: True,
        model_control: bool = False,
        counters: ParameterCounts | None = None,
    ) -> None:
        self.core = InferenceCore(
            repository,
            version=version,
            serving=serving,
            model_control=model_control,
            counters=counters,
        )
        self.repository = repository

    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.core.live())

    def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.ready())

    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.core.model_ready(request.name, request.version))

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        info = self.core.server_metadata()
        return pb.ServerMetadataResponse(
            name=info.name, version=info.version, extensions=info.extensions
        )

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        info = self.core.model_metadata(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=info.name,
            versions=info.versions,
            platform=info.platform,
            inputs=[dataclasses.asdict(t) for t in info.inputs],
            outputs=[dataclasses.asdict(t) for t in info.outputs],
        )

    def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(self.core.model_config(request.name, request.version))
        return response

    def _infer(self, request: InferRequest, deadline: float | None) -> Awaitable[InferResult]:
        for tensor in request.inputs:
            if tensor.datatype == BYTES:
                # Images are decoded in the caller's thread: not the loop's.
                loop = asyncio.get_running_loop()
                return loop.run_in_executor(None, self.core.infer, request, deadline)
        return self.core.infer_async(request, deadline)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        remaining = context.time_remaining()
        deadline = None if remaining is None or remaining > 1e6 else time.perf_counter() + remaining
        decoded = protocol.request_from_proto(
            request, self.core.max_bytes_elements, self.core.counters
        )
        return protocol.response_to_proto(await self._infer(decoded, deadline))

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        max_bytes = self.core.max_bytes_elements
        async for request in request_iterator:
            try:
                decoded = protocol.request_from_proto(request, max_bytes, self.core.counters)
                result = await self._infer(decoded, None)
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
        response = pb.ModelStatisticsResponse()
        for entry in self.core.statistics(request.name, request.version):
            snap = entry.snapshot
            stats = response.model_stats.add(
                name=entry.name,
                version=entry.version,
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
            infer.cache_hit.SetInParent()  # no response cache: present and zero, as Triton's
            infer.cache_miss.SetInParent()
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
        for entry in self.core.index(ready_only=request.ready):
            response.models.add(
                name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
            )
        return response

    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self.core.load(request.model_name, request.parameters)
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self.core.unload(request.model_name, request.parameters)
        return pb.RepositoryModelUnloadResponse()


# Cheap answers to "alive?" and "ready?": they run on the event loop (services.common.calls),
# so they answer while every handler thread is busy.
PROBES = ("ServerLive", "ServerReady", "ModelReady")


def add_to_server(servicer: InferenceServicer, server: grpc.Server) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
