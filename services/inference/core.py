"""The inference service as the domain sees it: one object that both front ends call.

`InferenceCore` answers every request of the Open Inference Protocol (and Triton's
extensions) with plain values: booleans, dataclasses, the model's `ModelConfig`,
statistics snapshots. The gRPC servicer (services.inference.servicer) turns them into
protobuf, the REST front end (services.inference.http) into JSON; neither decides
anything, so both answer alike, raise the same domain errors and count on the same
statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.errors import InvalidInput, ModelNotFound, NotReady, Unimplemented
from services.generated.inference import model_config_pb2 as mc
from services.inference.config import check_model_name, parse_version
from services.inference.model import ModelVersion
from services.inference.protocol import ParameterCounts
from services.inference.repository import IndexEntry, ModelRepository
from services.inference.stats import Snapshot
from services.inference.tensors import InferRequest, InferResult

SERVER_NAME = "stride"
EXTENSIONS = (
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "statistics",
    "binary_tensor_data",
)
UNLOAD_PARAMETERS = ("unload_dependents",)
# Triton's answer (UNAVAILABLE) when its model control mode does not allow the call.
CONTROL_OFF = (
    "repository control is off: the server loads the models it finds (and polls for "
    "changes with --poll-interval); start it with --model-control explicit to load and "
    "unload models through the API"
)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as model metadata describes it; -1 marks the batch or a variable dimension."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ModelInfo:
    """Model metadata (ModelMetadata / GET /v2/models/{name})."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class ModelStatistics:
    """One loaded version's statistics at the moment they were asked for."""

    name: str
    version: str
    snapshot: Snapshot


class Cluster(Protocol):
    """The other processes of a server of several (stride serve --workers N), as the
    core sees them (services.inference.worker_link.WorkerLink)."""

    def control(self, action: str, name: str) -> None:
        """Load or unload a model in every process; raises the domain error it raised."""

    def statistics(self) -> dict[tuple[str, str], Snapshot]:
        """Statistics by (model, version), summed over every process."""


class InferenceCore:
    """Every call of the protocol over a ModelRepository (raises services.common.errors)."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        version: str,
        serving: Callable[[], bool] = lambda: True,
        model_control: bool = False,
        counters: ParameterCounts | None = None,
    ) -> None:
        self.repository = repository
        self.counters = counters  # ignored request parameters, for the metrics page
        self.version = version
        self._serving = serving  # False while the server drains
        # Load and unload through the API (Triton's --model-control-mode explicit); off by
        # default, as Triton's: anyone who may call the server could otherwise unload.
        self.model_control = model_control
        # A server of several processes: loads and unloads reach all of them, statistics
        # are their sum. None: this process is the whole server.
        self.cluster: Cluster | None = None

    # Health and metadata ---------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._serving() and self.repository.all_ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        check_model_name(name)
        parse_version(version)
        return self.repository.is_ready(name, version)

    def server_metadata(self) -> ServerInfo:
        return ServerInfo(SERVER_NAME, self.version, EXTENSIONS)

    def model_metadata(self, name: str, version: str = "") -> ModelInfo:
        model = self.repository.get(name, version)
        s = model.settings
        batch = [-1] if s.max_batch_size else []
        versions = [
            e.version
            for e in self.repository.index(ready_only=True)
            if e.name == model.name and e.version
        ]
        return ModelInfo(
            name=model.name,
            versions=versions,
            platform=model.config.platform,
            inputs=[TensorInfo(t.name, t.datatype, batch + list(t.dims)) for t in s.inputs],
            outputs=[TensorInfo(t.name, t.datatype, batch + list(t.dims)) for t in s.outputs],
        )

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        return self.repository.get(name, version).config

    # Inference -------------------------------------------------------------------

    def infer(self, request: InferRequest, deadline: float | None = None) -> InferResult:
        return self.repository.infer(request, deadline)

    def infer_async(
        self, request: InferRequest, deadline: float | None = None
    ) -> Coroutine[Any, Any, InferResult]:
        """`infer` to await on an event loop (BYTES images are decoded in the caller's
        thread, so a loop that serves them should run `infer` in an executor instead).
        The repository's coroutine itself: no frame of its own per request."""
        return self.repository.infer_async(request, deadline)

    @property
    def max_bytes_elements(self) -> int:
        return self.repository.limits.max_bytes_elements

    # Statistics and the repository ---------------------------------------------------

    def statistics(self, name: str = "", version: str = "") -> list[ModelStatistics]:
        """Every loaded version's statistics, or those of one model (and version)."""
        if name:
            check_model_name(name)
        number = parse_version(version)
        if number is not None and not name:
            raise InvalidInput("a statistics request with a version needs a model name")
        models: list[ModelVersion] = [
            m
            for m in self.repository.models()
            if (not name or m.name == name) and (number is None or m.version == number)
        ]
        if name and not models:
            self.repository.get(name, version)  # raises the precise error
            raise ModelNotFound(f"no statistics for model {name!r}")
        if self.cluster is not None:
            summed = self.cluster.statistics()
            return [
                ModelStatistics(
                    m.name,
                    str(m.version),
                    summed.get((m.name, str(m.version))) or m.stats.snapshot(),
                )
                for m in models
            ]
        return [ModelStatistics(m.name, str(m.version), m.stats.snapshot()) for m in models]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        return self.repository.index(ready_only=ready_only)

    def load(self, name: str, parameters: Collection[str] = ()) -> None:
        if not self.model_control:
            raise NotReady(CONTROL_OFF)
        if parameters:
            raise Unimplemented(
                f"load parameters {sorted(parameters)} are not supported: edit the "
                "model's files in the repository and load it again"
            )
        if self.cluster is not None:
            check_model_name(name)
            self.cluster.control("load", name)
        else:
            self.repository.load(name)

    def unload(self, name: str, parameters: Collection[str] = ()) -> None:
        if not self.model_control:
            raise NotReady(CONTROL_OFF)
        unknown = sorted(set(parameters) - set(UNLOAD_PARAMETERS))
        if unknown:
            raise InvalidInput(
                f"unknown unload parameters {unknown}; supported: {', '.join(UNLOAD_PARAMETERS)}"
            )
        if self.cluster is not None:
            check_model_name(name)
            self.cluster.control("unload", name)
        else:
            self.repository.unload(name)
