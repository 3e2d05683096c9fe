"""Assemble the inference server: repository, servicer, managed gRPC server, metrics.

server = InferenceServer(Path("repository"), ServerOptions(port=8001), metrics_port=8002)
server.start()                    # loads and warms up every model, then serves
server.install_signal_handlers()  # SIGTERM: NOT_SERVING, drain, release models
server.wait()
"""

from __future__ import annotations

import logging
from pathlib import Path

from services.common.server import ManagedServer, ServerOptions, Service
from services.inference.metrics import MetricsServer
from services.inference.repository import ModelRepository
from services.inference.runtime import RuntimeOptions
from services.inference.servicer import InferenceServicer, add_to_server

log = logging.getLogger("stride.inference.server")

SERVICE_NAME = "inference.GRPCInferenceService"


class InferenceServer:
    """The whole server; every part is released in order by `stop()`."""

    def __init__(
        self,
        repository: Path,
        options: ServerOptions,
        *,
        metrics_port: int | None = 8002,
        poll_interval: float | None = None,
        runtime: RuntimeOptions | None = None,
        version: str = "0",
    ) -> None:
        self._poll_interval = poll_interval
        self._metrics_port = metrics_port
        self.metrics: MetricsServer | None = None
        self.repository = ModelRepository(repository, runtime, on_health=self._set_health)
        self.servicer = InferenceServicer(
            self.repository, version=version, serving=lambda: not self.grpc.stopping
        )
        self.grpc = ManagedServer(
            [Service(SERVICE_NAME, lambda s: add_to_server(self.servicer, s))],
            options,
            on_stop=[self._release],
        )

    def _set_health(self, name: str, ready: bool) -> None:
        self.grpc.set_health(name, ready)

    @property
    def port(self) -> int:
        return self.grpc.port

    def start(self) -> InferenceServer:
        """Load every model (a bad one fails alone), start polling, metrics and gRPC."""
        self.repository.poll()
        for entry in self.repository.index():
            if entry.state != "READY":
                log.warning(
                    "model %s %s: %s %s", entry.name, entry.version, entry.state, entry.reason
                )
        if self._poll_interval:
            self.repository.start_polling(self._poll_interval)
        if self._metrics_port is not None:
            self.metrics = MetricsServer(
                self.grpc.options.host, self._metrics_port, self.repository.models
            ).start()
        self.grpc.start()
        for model in self.repository.models():  # the server's health servicer exists now
            self._set_health(model.name, True)
        return self

    def install_signal_handlers(self) -> None:
        self.grpc.install_signal_handlers()

    def stop(self, grace: float | None = None) -> None:
        self.grpc.stop(grace)

    def wait(self, timeout: float | None = None) -> bool:
        return self.grpc.wait(timeout)

    def _release(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        self.repository.close()
