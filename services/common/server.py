"""A managed gRPC server: build, start, wait; drain on SIGTERM; release at the end.

`ManagedServer` takes the services to host (each a `Service`: its full proto
name and a function that registers its servicer) and `ServerOptions`, and adds
what every Stride server needs: grpc.health.v1 with a status per service name,
server reflection, the `ServiceInterceptor` (auth, request ids, error mapping,
logs), message size limits, a cap on concurrent calls, TLS or mutual TLS, and an
optional second plaintext port that serves health only (for Kubernetes probes
when the main port uses TLS).

Threads: calls run on one of three pools. Health Check and each service's probe
methods run on `PROBE_THREADS` threads of their own, so a server whose handler
threads are all busy (slow models, a flood) still answers its probes; streaming
calls run on a `StreamGuard`'s pool (at most `max_streams`, idle ones ended);
everything else runs on `handler_threads` threads.

Shutdown order: health reports NOT_SERVING for every name, the server stops
taking new calls and gives the calls in flight `grace_period` seconds (the
`on_drain` callbacks, such as another front end's stop, run beside it), then the
`on_stop` callbacks release what the services hold (models, files).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.counters import CallCounters
from services.common.interceptors import HEALTH_CHECK, HEALTH_METHODS, ServiceInterceptor
from services.common.streams import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STREAMS, StreamGuard

log = logging.getLogger("stride.services.server")

HEALTH_SERVICE = "grpc.health.v1.Health"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# A batch of 64 3x224x224 float32 images is 38.5 MB; leave room for protobuf framing.
DEFAULT_MAX_MESSAGE_MB = 64
# Probes take microseconds; a few threads answer a kubelet, a load balancer and a person.
PROBE_THREADS = 4


@dataclass(frozen=True)
class Service:
    """A service to host: its full proto name (for health and reflection) and its registration."""

    name: str  # e.g. "inference.GRPCInferenceService"
    register: Callable[[grpc.Server], None]  # e.g. lambda s: add_XServicer_to_server(impl, s)
    # Cheap unary methods that answer "alive?" or "ready?" (e.g. "ServerReady"): they run on
    # the probe threads with health Check, so they answer when the handler threads are busy.
    probes: tuple[str, ...] = ()
    # Request parsers by method name, to refuse a message from its bytes before protobuf
    # builds it (see services.common.interceptors); e.g. {"ModelInfer": parse_request}.
    parsers: Mapping[str, Callable[[bytes], Any]] = field(default_factory=dict)

    def probe_methods(self) -> list[str]:
        return [f"/{self.name}/{method}" for method in self.probes]


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
    # gRPC handler threads for unary calls: one per call in flight (calls block while batched).
    handler_threads: int = 64
    # Unary calls being served at once (probes aside); more answer RESOURCE_EXHAUSTED. Below
    # handler_threads, so that a thread is free to say so.
    max_concurrent_requests: int | None = None
    max_streams: int = DEFAULT_MAX_STREAMS  # streaming calls open at once; more are refused
    stream_idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # seconds without a message either way
    max_message_mb: float = DEFAULT_MAX_MESSAGE_MB  # per message, both directions
    grace_period: float = 10.0  # seconds for calls in flight after SIGTERM
    tls: TlsFiles | None = None
    auth_token: str | None = None  # bearer token for everything but `open_methods`
    reflection: bool = True
    open_methods: tuple[str, ...] = HEALTH_METHODS  # exact "/package.Service/Method" names

    def __post_init__(self) -> None:
        if self.handler_threads < 1:
            raise ValueError(f"handler threads must be at least 1, got {self.handler_threads}")
        if self.max_streams < 1:
            raise ValueError(f"max streams must be at least 1, got {self.max_streams}")
        if self.stream_idle_timeout <= 0:
            raise ValueError(
                f"stream idle timeout must be positive, got {self.stream_idle_timeout} s"
            )
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
        on_drain: Sequence[Callable[[], None]] = (),
        counters: CallCounters | None = None,
    ) -> None:
        self.options = options
        self.counters = counters  # unary calls by method and code (metrics per protocol)
        self.services = list(services)
        self.health = health.HealthServicer()
        self._on_stop = list(on_stop)
        self._on_drain = list(on_drain)  # run beside gRPC's drain (other front ends)
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._pool = futures.ThreadPoolExecutor(
            max_workers=options.handler_threads, thread_name_prefix="grpc"
        )
        self._probe_pool = futures.ThreadPoolExecutor(
            max_workers=PROBE_THREADS, thread_name_prefix="grpc-probe"
        )
        self.streams = StreamGuard(options.max_streams, options.stream_idle_timeout)
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

    def _interceptor(self, auth_token: str | None) -> ServiceInterceptor:
        probes = [HEALTH_CHECK, *(m for s in self.services for m in s.probe_methods())]
        parsers = {f"/{s.name}/{m}": parse for s in self.services for m, parse in s.parsers.items()}
        return ServiceInterceptor(
            auth_token=auth_token,
            open_methods=self.options.open_methods,
            probe_methods=probes,
            probe_pool=self._probe_pool,
            streams=self.streams,
            max_concurrent=self.options.max_concurrent_requests,
            parsers=parsers,
            counters=self.counters,
        )

    def _build_main(self) -> grpc.Server:
        # No maximum_concurrent_rpcs: gRPC would count probes and idle streams against it
        # and refuse health checks; the interceptor caps unary calls on their own.
        opts = self.options
        server = grpc.server(
            self._pool,
            interceptors=[self._interceptor(opts.auth_token)],
            options=self._grpc_options(),
        )
        for service in self.services:
            service.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if opts.reflection:
            names = [s.name for s in self.services] + [HEALTH_SERVICE, reflection.SERVICE_NAME]
            reflection.enable_server_reflection(names, server)
        return server

    def _build_health(self) -> grpc.Server:
        # Same probe threads and stream limits as the main port: Watch streams opened here
        # count against max_streams too, so they cannot take the Check threads.
        server = grpc.server(
            self._probe_pool,
            interceptors=[self._interceptor(None)],
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
        """Bind the ports, start serving and report every service SERVING.

        If a port cannot be bound, whatever started is stopped again before the OSError
        leaves, so a failed start holds no port and no thread.
        """
        with contextlib.ExitStack() as undo:
            undo.callback(self._release_threads)
            undo.callback(_discard, self._server)
            self.port = self._bind(self._server, self.options.port, self.options.tls)
            if self._health_server is not None and self.options.health_port is not None:
                undo.callback(_discard, self._health_server)
                self.health_port = self._bind(self._health_server, self.options.health_port, None)
                self._health_server.start()
            self._server.start()
            undo.pop_all()
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
            drains = [
                threading.Thread(target=_logged(d), name="stride-drain") for d in self._on_drain
            ]
            for drain in drains:
                drain.start()
            self._server.stop(grace).wait()
            for drain in drains:
                drain.join()
            if self._health_server is not None:
                self._health_server.stop(0).wait()
            self._release_threads()
            for release in self._on_stop:
                try:
                    release()
                except Exception:  # release the rest even when one fails
                    log.exception("release step failed during shutdown")
            log.info("stopped")
        finally:
            self._stopped.set()

    def _release_threads(self) -> None:
        self.streams.close()
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `stop` has finished (True) or the timeout passes (False)."""
        return self._stopped.wait(timeout)


def _logged(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            step()
        except Exception:  # the other steps go on
            log.exception("drain step failed during shutdown")

    return run


def _discard(server: grpc.Server) -> None:
    """Stop a server whose start failed. gRPC keeps a port that was bound but never served
    until the server has started and stopped, so start it for that moment."""
    with contextlib.suppress(ValueError):  # started already
        server.start()
    server.stop(None).wait()


# glibc serves an allocation this large or larger straight from the kernel (mmap) and gives
# it back on free. Its default starts at 128 kB but rises to the largest block freed so far,
# after which multi-MB request buffers come from the heap and its arenas (one per thread)
# keep their high-water marks: 2 million empty BYTES elements sent a few times grew the
# inference server from 89 to 164 MiB; with the threshold fixed it stayed near 105 MiB.
LARGE_ALLOCATION_BYTES = 256 * 1024
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc malloc.h)


def return_large_allocations_to_the_os(threshold: int = LARGE_ALLOCATION_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process (call once, at start); False where the C
    library is not glibc (the setting is then left as it is)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
