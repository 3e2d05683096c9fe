"""Assemble the inference server: repository, the core with its gRPC and REST front ends,
managed gRPC server, metrics.

server = InferenceServer(Path("repository"), ServerOptions(port=8001), metrics=MetricsOptions(),
                         http=HttpOptions(port=8000))
server.start()                    # loads and warms up every model, then serves
server.install_signal_handlers()  # SIGTERM: NOT_SERVING, drain, release models
server.wait()

`start()` either leaves everything running or, when any step fails (a busy port,
a metrics port that cannot be bound), stops what it had started before the
error leaves: no poller thread, metrics thread or loaded model outlives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from services.common.counters import CallCounters
from services.common.options import ServerOptions, Service
from services.common.server import ManagedServer
from services.inference.metrics import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, MetricsServer
from services.inference.repository import ModelRepository
from services.inference.rest_server import HttpOptions, HttpServer
from services.inference.runtime import RuntimeOptions
from services.inference.servicer import PROBES, InferenceServicer, add_to_server
from services.inference.tensors import RequestLimits
from services.inference.wire import REQUEST_COSTS, parse_infer_request

log = logging.getLogger("stride.inference.server")

SERVICE_NAME = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class MetricsOptions:
    """The Prometheus port: where, how many connections for how long, and whether over TLS."""

    port: int = 8002  # 0: a free one
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # more are closed unanswered
    timeout: float = DEFAULT_TIMEOUT  # seconds a connection may take, all told
    tls: bool = False  # the gRPC port's TLS files (and client CA) on the metrics port too


DEFAULT_METRICS = MetricsOptions()


class InferenceServer:
    """The whole server; every part is released in order by `stop()`."""

    def __init__(
        self,
        repository: Path,
        options: ServerOptions,
        *,
        metrics: MetricsOptions | None = DEFAULT_METRICS,  # None: no metrics port
        poll_interval: float | None = None,
        runtime: RuntimeOptions | None = None,
        limits: RequestLimits | None = None,
        version: str = "0",
        http: HttpOptions | None = None,  # None: no REST port
        model_control: bool = False,  # repository load and unload calls allowed
    ) -> None:
        limits = limits or RequestLimits()
        if limits.max_response_bytes is None:  # an answer must fit in one message
            size = int(options.max_message_mb * 1024 * 1024)
            limits = dataclasses.replace(limits, max_response_bytes=size)
        if metrics is not None and metrics.tls and options.tls is None:
            raise ValueError("metrics over TLS needs the server's TLS files (--tls-cert/--tls-key)")
        self._poll_interval = poll_interval
        self._metrics_options = metrics
        self.metrics: MetricsServer | None = None
        self._http_options = http
        self.http: HttpServer | None = None
        self.counters = CallCounters()  # calls per protocol, for the metrics page
        self.repository = ModelRepository(
            repository, runtime, limits=limits, on_health=self._set_health
        )
        self.servicer = InferenceServicer(
            self.repository,
            version=version,
            serving=lambda: not self.grpc.stopping,
            model_control=model_control,
            counters=self.counters,
        )
        # Requests are counted on the wire before protobuf builds them (services.inference.wire).
        parse = functools.partial(parse_infer_request, max_bytes_elements=limits.max_bytes_elements)
        service = Service(
            SERVICE_NAME,
            lambda s: add_to_server(self.servicer, s),
            probes=PROBES,
            parsers={"ModelInfer": parse, "ModelStreamInfer": parse},
            request_costs=REQUEST_COSTS,
        )
        self.grpc = ManagedServer(
            [service],
            options,
            on_stop=[self._release],
            on_drain=[self._stop_http],
            counters=self.counters,
        )

    def _set_health(self, name: str, ready: bool) -> None:
        self.grpc.set_health(name, ready)

    @property
    def port(self) -> int:
        return self.grpc.port

    def start(self) -> InferenceServer:
        """Load every model (a bad one fails alone), then serve metrics and gRPC, then poll."""
        with contextlib.ExitStack() as undo:
            undo.callback(self.repository.close)  # also stops a poller once it runs
            self.repository.poll()
            for entry in self.repository.index():
                if entry.state != "READY":
                    log.warning(
                        "model %s %s: %s %s", entry.name, entry.version, entry.state, entry.reason
                    )
            if self._metrics_options is not None:
                opts = self._metrics_options
                self.metrics = MetricsServer(
                    self.grpc.options.host,
                    opts.port,
                    self.repository.models,
                    max_connections=opts.max_connections,
                    timeout=opts.timeout,
                    tls=self.grpc.options.tls if opts.tls else None,
                    counters=self.counters,
                ).start()
                undo.callback(self.metrics.stop)
            if self._http_options is not None:
                self.http = HttpServer(self.servicer.core, self._http_options, self.counters)
                self.http.start()
                undo.callback(self._stop_http)
            self.grpc.start()  # stops what it started itself if a port is busy
            undo.callback(self.grpc.stop, 0)
            if self._poll_interval:
                self.repository.start_polling(self._poll_interval)
            for model in self.repository.models():  # the server's health servicer exists now
                self._set_health(model.name, True)
            undo.pop_all()
        return self

    def install_signal_handlers(self) -> None:
        self.grpc.install_signal_handlers()

    def stop(self, grace: float | None = None) -> None:
        self.grpc.stop(grace)

    def wait(self, timeout: float | None = None) -> bool:
        return self.grpc.wait(timeout)

    def _stop_http(self) -> None:
        if self.http is not None:
            self.http.stop()

    def _release(self) -> None:
        self._stop_http()  # stopped already unless the start failed
        if self.metrics is not None:
            self.metrics.stop()
        self.repository.close()
