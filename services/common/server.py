"""A managed gRPC server: build, start, wait; drain on SIGTERM; release at the end.

`ManagedServer` takes the services to host (each a `Service`: its full proto
name and a function that registers its servicer) and `ServerOptions`, and adds
what every Stride server needs: grpc.health.v1 with a status per service name,
server reflection, the `ServiceInterceptor` (auth, request ids, error mapping,
logs), message size limits, a cap on concurrent calls, TLS or mutual TLS, and an
optional second plaintext port that serves health only (for Kubernetes probes
when the main port uses TLS).

Shutdown order: health reports NOT_SERVING for every name, the server stops
taking new calls and gives the calls in flight `grace_period` seconds, then the
`on_stop` callbacks release what the services hold (models, files).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.interceptors import ServiceInterceptor

log = logging.getLogger("stride.services.server")

HEALTH_SERVICE = "grpc.health.v1.Health"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# A batch of 64 3x224x224 float32 images is 38.5 MB; leave room for protobuf framing.
DEFAULT_MAX_MESSAGE_MB = 64


@dataclass(frozen=True)
class Service:
    """A service to host: its full proto name (for health and reflection) and its registration."""

    name: str  # e.g. "inference.GRPCInferenceService"
    register: Callable[[grpc.Server], None]  # e.g. lambda s: add_XServicer_to_server(impl, s)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS; with `ca`, clients must present a certificate signed by it (mTLS)."""

    cert: Path
    key: Path
    ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Read the files and build server credentials (OSError names a missing file)."""
        ca = self.ca.read_bytes() if self.ca else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


@dataclass(frozen=True)
class ServerOptions:
    """How to run a server. Ports may be 0 (pick a free one; `ManagedServer.port` tells)."""

    host: str = "0.0.0.0"
    port: int = 8001
    health_port: int | None = None  # extra plaintext port with grpc.health.v1 only
    threads: int = 64  # handler threads: one per call in flight (calls block while batched)
    max_concurrent_requests: int | None = None  # more answer RESOURCE_EXHAUSTED
    max_message_mb: float = DEFAULT_MAX_MESSAGE_MB  # per message, both directions
    grace_period: float = 10.0  # seconds for calls in flight after SIGTERM
    tls: TlsFiles | None = None
    auth_token: str | None = None  # bearer token for everything but health
    reflection: bool = True
    open_services: tuple[str, ...] = field(default=(HEALTH_SERVICE,))

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.max_concurrent_requests is not None and self.max_concurrent_requests < 1:
            raise ValueError(
                f"max concurrent requests must be at least 1, got {self.max_concurrent_requests}"
            )
        if self.max_message_mb <= 0:
            raise ValueError(f"max message size must be positive, got {self.max_message_mb} MB")
        if self.grace_period < 0:
            raise ValueError(f"grace period must be >= 0 seconds, got {self.grace_period}")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ValueError("auth token is empty: give a non-empty token or none")


class ManagedServer:
    """A gRPC server with health, reflection, interceptors and graceful shutdown."""

    def __init__(
        self,
        services: Sequence[Service],
        options: ServerOptions,
        *,
        on_stop: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.options = options
        self.services = list(services)
        self.health = health.HealthServicer()
        self._on_stop = list(on_stop)
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._server = self._build_main()
        self._health_server = self._build_health() if options.health_port is not None else None
        self.port = 0
        self.health_port: int | None = None

    def _grpc_options(self) -> list[tuple[str, int]]:
        size = int(self.options.max_message_mb * 1024 * 1024)
        return [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0),  # a busy port must fail, not be shared silently
        ]

    def _build_main(self) -> grpc.Server:
        opts = self.options
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=opts.threads, thread_name_prefix="grpc"),
            interceptors=[
                ServiceInterceptor(auth_token=opts.auth_token, open_services=opts.open_services)
            ],
            options=self._grpc_options(),
            maximum_concurrent_rpcs=opts.max_concurrent_requests,
        )
        for service in self.services:
            service.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if opts.reflection:
            names = [s.name for s in self.services] + [HEALTH_SERVICE, reflection.SERVICE_NAME]
            reflection.enable_server_reflection(names, server)
        return server

    def _build_health(self) -> grpc.Server:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health"),
            options=self._grpc_options(),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        return server

    def _bind(self, server: grpc.Server, port: int, tls: TlsFiles | None) -> int:
        address = f"{self.options.host}:{port}"
        try:
            if tls is not None:
                bound = server.add_secure_port(address, tls.credentials())
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen on {address}: port in use or address not available")
        return bound

    def start(self) -> ManagedServer:
        """Bind the ports, start serving and report every service SERVING."""
        self.port = self._bind(self._server, self.options.port, self.options.tls)
        if self._health_server is not None and self.options.health_port is not None:
            self.health_port = self._bind(self._health_server, self.options.health_port, None)
            self._health_server.start()
        self._server.start()
        for name in ["", *(s.name for s in self.services)]:
            self.health.set(name, SERVING)
        log.info(
            "serving %s on %s:%d%s",
            ", ".join(s.name for s in self.services),
            self.options.host,
            self.port,
            " (TLS)" if self.options.tls else "",
        )
        return self

    @property
    def stopping(self) -> bool:
        """True from the moment `stop` begins (readiness answers should turn false)."""
        return self._stopping

    def set_health(self, name: str, serving: bool) -> None:
        """Report a service name (a service, a model, ...) SERVING or NOT_SERVING."""
        if not self._stopping:
            self.health.set(name, SERVING if serving else NOT_SERVING)

    def install_signal_handlers(self) -> None:
        """Drain and stop on SIGTERM and SIGINT (call from the main thread)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("received %s: draining", signal.Signals(signum).name)
            threading.Thread(target=self.stop, name="stride-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING everywhere, drain calls in flight for the grace period, then release."""
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return
            self._stopping = True
        grace = self.options.grace_period if grace is None else grace
        try:
            self.health.enter_graceful_shutdown()  # every name reports NOT_SERVING from now on
            self._server.stop(grace).wait()
            if self._health_server is not None:
                self._health_server.stop(0).wait()
            for release in self._on_stop:
                try:
                    release()
                except Exception:  # release the rest even when one fails
                    log.exception("release step failed during shutdown")
            log.info("stopped")
        finally:
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `stop` has finished (True) or the timeout passes (False)."""
        return self._stopped.wait(timeout)
