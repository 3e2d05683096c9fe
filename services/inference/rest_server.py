"""The REST port: the Open Inference Protocol's HTTP/REST binding (services.inference.rest_app,
a Starlette app) served by uvicorn (httptools, uvloop) on its own thread and event loop.

The bearer token, TLS files and message size limit are the gRPC port's; health live
and ready stay open, like gRPC's health service. What a connection may hold before its
request is authenticated (its count, headers, handshake, pipelined requests) is
bounded by services.inference.http_protocol; what a request may hold after, by the
app's memory budget (services.inference.rest_budget).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from services.common.counters import CallCounters
from services.common.server import TlsFiles
from services.inference.core import InferenceCore
from services.inference.http_protocol import (
    Acceptor,
    ConnectionLimits,
    GuardedProtocol,
    protocol_class,
)
from services.inference.metrics import server_ssl_context
from services.inference.rest_app import RestApp

# Connections a server keeps open, in all and per client address: past either, a new
# connection is closed at once. Each holds a file descriptor (shared with the gRPC port)
# and up to a read and a request's headers before it is authenticated.
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_MAX_CONNECTIONS_PER_PEER = 128
BACKLOG = 2048  # connections the kernel queues until they are accepted (uvicorn's default)


@dataclass(frozen=True)
class HttpOptions:
    """The REST port: where, with which limits, and the gRPC port's TLS and token."""

    host: str = "0.0.0.0"
    port: int = 8000  # 0: a free one
    threads: int = 64  # infer, load and unload calls running at once; more wait their turn
    max_message_mb: float = 64  # one request body (after decompression)
    # Memory that requests may hold at once (bodies as they arrive, their JSON once parsed,
    # answers being sent), in all and per client address; more: 429.
    memory_budget_mb: float = 256
    memory_budget_mb_per_peer: float = 128
    tls: TlsFiles | None = None
    auth_token: str | None = None
    grace_period: float = 10.0  # seconds requests in flight get when the server stops
    # Calls in flight (health probes aside) past which a call is answered 429 at once, as
    # gRPC's RESOURCE_EXHAUSTED under --max-concurrent-requests; None: no limit.
    max_concurrent: int | None = None
    # Seconds a request body may take to arrive, all told (a body that never comes would
    # hold its connection and what it sent); past it: 408.
    body_timeout: float = 60.0
    # Seconds a connection may take to finish its TLS handshake, and to send a request's
    # headers (from the connection or the request's first byte); past it: closed (408).
    header_timeout: float = 10.0
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    # SO_REUSEPORT: several server processes may listen on the port (the kernel spreads
    # connections among them).
    reuse_port: bool = False

    def __post_init__(self) -> None:
        for name in ("body_timeout", "header_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"HTTP {name.replace('_', ' ')} must be positive, got {value}")
        if self.threads < 1:
            raise ValueError(f"HTTP threads must be at least 1, got {self.threads}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(
                f"max concurrent requests must be at least 1, got {self.max_concurrent}"
            )
        if self.max_message_mb <= 0:
            raise ValueError(f"HTTP message size must be positive, got {self.max_message_mb} MB")
        if not self.max_message_mb <= self.memory_budget_mb_per_peer <= self.memory_budget_mb:
            raise ValueError(
                "the HTTP memory budget per client must hold at least one message and at most "
                f"the whole budget, got {self.memory_budget_mb_per_peer} MB per client, "
                f"{self.memory_budget_mb} MB in all, messages of {self.max_message_mb} MB"
            )
        if not 1 <= self.max_connections_per_peer <= self.max_connections:
            raise ValueError(
                "HTTP connections per client must be at least 1 and at most the connections in "
                f"all, got {self.max_connections_per_peer} of {self.max_connections}"
            )


class HttpServer:
    """uvicorn serving a RestApp on its own thread and event loop, until `stop()`."""

    def __init__(
        self, core: InferenceCore, options: HttpOptions, counters: CallCounters | None = None
    ) -> None:
        import uvicorn

        self.options = options
        self.app = RestApp(core, options, counters)
        self.connections = ConnectionLimits(
            options.max_connections, options.max_connections_per_peer
        )
        tls = options.tls
        config = uvicorn.Config(
            self.app,
            loop="uvloop",
            http=protocol_class(options.header_timeout),
            ws="none",
            lifespan="off",
            # The client is the connection's address (the limits per client count by it), not
            # what an X-Forwarded-For header says.
            proxy_headers=False,
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=max(1, round(options.grace_period)),
        )
        self._server = _server_class()(config)
        self._server.accepting = (
            self.connections,
            server_ssl_context(tls) if tls else None,
            options.header_timeout,
        )
        self._socket = _listen(options.host, options.port, options.reuse_port)
        self.port = int(self._socket.getsockname()[1])
        self.tls = tls is not None
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), name="http", daemon=True
        )

    def start(self, timeout: float = 30) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OSError(f"the HTTP server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop taking connections, let requests in flight finish (the grace period)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(self.options.grace_period + 5)
        with contextlib.suppress(OSError):
            self._socket.close()
        self.app.close()


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with `Acceptor` in place of the event loop's listening server
        (uvicorn's own handles neither connection limits nor a handshake deadline)."""

        accepting: tuple[ConnectionLimits, ssl.SSLContext | None, float]

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            assert sockets, "this server serves sockets bound beforehand"
            config = self.config
            limits, tls, handshake_timeout = self.accepting

            def make_protocol() -> GuardedProtocol:
                protocol = config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state, app_state=self.lifespan.state
                )
                assert isinstance(protocol, GuardedProtocol)
                return protocol

            self.servers = [  # uvicorn closes them when it stops
                Acceptor(sock, make_protocol, limits, tls, handshake_timeout)  # type: ignore[misc]
                for sock in sockets
            ]
            self.started = True

    return Server


def _listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """Bind now, so that a busy port fails `stride serve`'s start with a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen for HTTP on {host}:{port}: {exc}") from exc
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock
