"""How a Stride gRPC server runs: what it hosts (`Service`), TLS files and every limit.

Each limit has a default that suits the inference server; `stride serve` and
`stride serve-analysis` set them from their flags (docs/serving.md and docs/analysis.md
list each with its flag).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from services.common.calls import HEALTH_METHODS

# A batch of 64 3x224x224 float32 images is 38.5 MB; leave room for protobuf framing.
DEFAULT_MAX_MESSAGE_MB = 64
DEFAULT_MAX_STREAMS = 32
DEFAULT_IDLE_TIMEOUT = 300.0  # Envoy's stream_idle_timeout


@dataclass(frozen=True)
class Service:
    """A service to host: its full proto name (for health and reflection) and its registration."""

    name: str  # e.g. "inference.GRPCInferenceService"
    register: Callable[[Any], None]  # e.g. lambda s: add_XServicer_to_server(impl, s)
    # Cheap unary methods that answer "alive?" or "ready?" (e.g. "ServerReady"): they run
    # on the event loop, so they answer while every handler thread is busy, and they are
    # never counted against max_concurrent_requests.
    probes: tuple[str, ...] = ()
    # Request parsers by method name, used instead of the generated deserializer (to refuse
    # a message from its bytes before protobuf builds it): {"ModelInfer": parse_request}.
    parsers: Mapping[str, Callable[[bytes], Any]] = field(default_factory=dict)
    # What a request of a method holds once read, per byte of its message (the message,
    # its parsed form and what the handler derives from it), for the memory budget;
    # methods not named here: services.common.calls.DEFAULT_REQUEST_COST.
    request_costs: Mapping[str, float] = field(default_factory=dict)

    def probe_methods(self) -> list[str]:
        return [f"/{self.name}/{method}" for method in self.probes]

    def method_costs(self) -> dict[str, float]:
        return {f"/{self.name}/{method}": cost for method, cost in self.request_costs.items()}


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
    # Threads for handlers that are plain functions (metadata, statistics, the analysis
    # calls); coroutine handlers (inference, health) run on the event loop.
    handler_threads: int = 64
    # Unary calls being served at once (probes aside); more answer RESOURCE_EXHAUSTED,
    # decided from the call's headers before its message is read.
    max_concurrent_requests: int | None = None
    max_streams: int = DEFAULT_MAX_STREAMS  # streaming calls open at once; more are refused
    # health Watch streams have slots of their own, so that watchers (who need no token)
    # cannot take the slots of the work streams; one address may hold a quarter of them.
    max_health_watches: int = 16
    stream_idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # seconds without a message either way
    # Seconds an admitted unary request's message may take to arrive (the memory it holds
    # meanwhile is held no longer than this).
    receive_timeout: float = 60.0
    max_message_mb: float = DEFAULT_MAX_MESSAGE_MB  # per message, both directions
    # The largest request (KB), when requests are far smaller than answers (the analysis
    # service's requests are a few hundred bytes, its answers megabytes); None: as above.
    max_request_kb: float | None = None
    # Memory admitted requests may hold at once (MB): a read counts the largest message
    # until it is in, then what its request costs (services.common.budget); None: 4 x
    # the largest request, at least 256. One client address may hold `..._per_peer` of
    # it (None: half).
    memory_budget_mb: float | None = None
    memory_budget_mb_per_peer: float | None = None
    max_connections: int = 512  # TCP connections at once (gRPC refuses more at accept)
    max_connection_streams: int = 128  # HTTP/2 streams open at once on one connection
    # Seconds a new connection may take for its TLS handshake and HTTP/2 preface.
    handshake_timeout: float = 10.0
    connection_idle_timeout: float = 600.0  # a connection without calls this long is closed
    grace_period: float = 10.0  # seconds for calls in flight after SIGTERM
    tls: TlsFiles | None = None
    auth_token: str | None = None  # bearer token for everything but `open_methods`
    reflection: bool = True
    open_methods: tuple[str, ...] = HEALTH_METHODS  # exact "/package.Service/Method" names
    # Share the gRPC port with other processes (SO_REUSEPORT), for one server per core.
    reuse_port: bool = False

    def __post_init__(self) -> None:
        positive = {
            "handler threads": self.handler_threads,
            "max streams": self.max_streams,
            "max health watches": self.max_health_watches,
            "max connections": self.max_connections,
            "max connection streams": self.max_connection_streams,
        }
        for what, value in positive.items():
            if value < 1:
                raise ValueError(f"{what} must be at least 1, got {value}")
        timeouts = {
            "stream idle timeout": self.stream_idle_timeout,
            "receive timeout": self.receive_timeout,
            "handshake timeout": self.handshake_timeout,
            "connection idle timeout": self.connection_idle_timeout,
        }
        for what, seconds in timeouts.items():
            if not seconds > 0:
                raise ValueError(f"{what} must be positive, got {seconds} s")
        if self.max_concurrent_requests is not None and self.max_concurrent_requests < 1:
            raise ValueError(
                f"max concurrent requests must be at least 1, got {self.max_concurrent_requests}"
            )
        if not self.max_message_mb > 0:
            raise ValueError(f"max message size must be positive, got {self.max_message_mb} MB")
        if self.max_request_kb is not None and not self.max_request_kb > 0:
            raise ValueError(f"max request size must be positive, got {self.max_request_kb} KB")
        for what, mb in (
            ("memory budget", self.memory_budget_mb),
            ("memory budget per peer", self.memory_budget_mb_per_peer),
        ):
            if mb is not None and not mb > 0:
                raise ValueError(f"{what} must be positive, got {mb} MB")
        if self.budget_per_peer_bytes > self.budget_bytes:
            raise ValueError(
                f"memory budget per peer ({self.budget_per_peer_bytes / 2**20:g} MB) is larger "
                f"than the memory budget ({self.budget_bytes / 2**20:g} MB)"
            )
        if self.grace_period < 0:
            raise ValueError(f"grace period must be >= 0 seconds, got {self.grace_period}")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ValueError("auth token is empty: give a non-empty token or none")

    @property
    def max_send_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)

    @property
    def max_receive_bytes(self) -> int:
        if self.max_request_kb is not None:
            return int(self.max_request_kb * 1024)
        return self.max_send_bytes

    @property
    def budget_bytes(self) -> int:
        """The memory budget of admitted requests, in bytes."""
        if self.memory_budget_mb is not None:
            return int(self.memory_budget_mb * 2**20)
        return max(256 * 2**20, 4 * self.max_receive_bytes)

    @property
    def budget_per_peer_bytes(self) -> int:
        if self.memory_budget_mb_per_peer is not None:
            return int(self.memory_budget_mb_per_peer * 2**20)
        return self.budget_bytes // 2

    @property
    def max_calls(self) -> int:
        """gRPC's own cap on calls at once, all kinds: far above what the limits above let
        through (a call past them is refused at once, so calls do not pile up), so that it
        binds only if those do not."""
        unary = self.max_concurrent_requests or 4 * self.handler_threads
        return unary + self.max_streams + self.max_health_watches + 256
