"""A managed gRPC server on grpc.aio: build, start, wait; drain on SIGTERM; release at the end.

`ManagedServer` takes the services to host (each a `Service`) and `ServerOptions`, and
adds what every Stride server needs: grpc.health.v1 (services.common.health) with a
status per name, server reflection, the `CallGate` through which every method passes
(services.common.calls: token, admission, reading, lanes, errors, counters, streams),
gRPC's own transport limits, TLS or mutual TLS, and an optional second plaintext port
that serves health only (for Kubernetes probes when the main port uses TLS).

One event loop, in a thread of its own ("grpc-loop"), serves every call: coroutine
handlers run on it, plain-function handlers on `handler_threads` threads, streams
produced by plain-function generators on threads of their own (one per stream slot).
Everything belongs to the object (loop, pools, counters), so that several processes can
each run one on a shared port (`reuse_port`). The public methods are called from any
thread but the loop's.

Shutdown order: health reports NOT_SERVING for every name and new calls answer
UNAVAILABLE, the server stops taking new calls and gives the calls in flight
`grace_period` seconds (the `on_drain` callbacks, such as another front end's stop,
run beside it), then the `on_stop` callbacks release what the services hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from types import FrameType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from services.common.auth import BearerToken
from services.common.budget import ReadBudget
from services.common.calls import HEALTH_CHECK, CallGate, Registrar
from services.common.counters import CallCounters
from services.common.health import HEALTH_SERVICE, NOT_SERVING, SERVING, HealthService
from services.common.options import (
    DEFAULT_MAX_MESSAGE_MB,
    ServerOptions,
    Service,
    TlsFiles,
)
from services.common.slots import Slots

__all__ = [
    "DEFAULT_MAX_MESSAGE_MB",
    "HEALTH_SERVICE",
    "ManagedServer",
    "ServerOptions",
    "Service",
    "TlsFiles",
    "return_large_allocations_to_the_os",
]

log = logging.getLogger("stride.services.server")

T = TypeVar("T")
MAX_METADATA_BYTES = 8192  # gRPC's default soft limit, made explicit
KEEPALIVE_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
# A health request is a service name: the health port reads nothing larger.
HEALTH_PORT_MAX_REQUEST = 4096
# Between telling new calls UNAVAILABLE and closing the port: calls already on their way
# get that answer rather than gRPC's CANCELLED for calls it had accepted but not started.
DRAIN_NOTICE_S = 0.1


class ManagedServer:
    """A grpc.aio server with health, reflection, the call gate and graceful shutdown."""

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
        self._on_stop = list(on_stop)
        self._on_drain = list(on_drain)  # run beside gRPC's drain (other front ends)
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._pool = futures.ThreadPoolExecutor(
            max_workers=options.handler_threads, thread_name_prefix="grpc"
        )
        self._stream_pool = futures.ThreadPoolExecutor(
            max_workers=options.max_streams, thread_name_prefix="grpc-stream"
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="grpc-loop", daemon=True)
        self.health = HealthService()
        self.calls = self._gate(options.auth_token, read_open=True)
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._health_gate: CallGate | None = None
        self.port = 0
        self.health_port: int | None = None

    # The loop ------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the loop and wait for it (from any thread but the loop's)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # Construction --------------------------------------------------------------------

    def _gate(self, auth_token: str | None, *, read_open: bool) -> CallGate:
        opts = self.options
        probes = [HEALTH_CHECK, *(m for s in self.services for m in s.probe_methods())]
        parsers = {f"/{s.name}/{m}": parse for s in self.services for m, parse in s.parsers.items()}
        costs = {m: c for s in self.services for m, c in s.method_costs().items()}
        # The health port reads no request (read_open=False): nothing to count there.
        budget = ReadBudget(opts.budget_bytes, opts.budget_per_peer_bytes) if read_open else None
        return CallGate(
            pool=self._pool,
            stream_pool=self._stream_pool,
            token=BearerToken(auth_token) if auth_token else None,
            open_methods=opts.open_methods,
            probe_methods=probes,
            read_open=read_open,
            max_concurrent=opts.max_concurrent_requests,
            parsers=parsers,
            counters=self.counters,
            streams=Slots(opts.max_streams, what="streams", flag="--max-streams"),
            watches=Slots(
                opts.max_health_watches,
                what="health Watch streams",
                flag="--max-health-watches",
                per_peer=max(1, opts.max_health_watches // 4),
            ),
            idle_timeout=opts.stream_idle_timeout,
            receive_timeout=opts.receive_timeout,
            budget=budget,
            read_size=opts.max_receive_bytes,
            request_costs=costs,
        )

    def _grpc_options(self, max_receive: int) -> list[tuple[str, int]]:
        opts = self.options
        return [
            ("grpc.max_receive_message_length", max_receive),
            ("grpc.max_send_message_length", opts.max_send_bytes),
            # A busy port must fail, not be shared silently, unless sharing is asked for.
            ("grpc.so_reuseport", 1 if opts.reuse_port else 0),
            ("grpc.max_allowed_incoming_connections", opts.max_connections),
            ("grpc.max_concurrent_streams", opts.max_connection_streams),
            ("grpc.server_handshake_timeout_ms", int(opts.handshake_timeout * 1000)),
            ("grpc.max_connection_idle_ms", int(opts.connection_idle_timeout * 1000)),
            # No bandwidth-delay probing: it grows every stream's flow-control window (to
            # 8-16 MiB on a fast link) whether or not its handler reads, so a call waiting
            # for its token check, admission or room in the memory budget could be sent
            # that much uncounted. Without it a stream's window stays at HTTP/2's 64 KiB
            # until its handler posts a read (which lets in the message it announced).
            ("grpc.http2.bdp_probe", 0),
            # Ping a connection quiet this long; one that does not answer is closed (a
            # client that vanished without closing would otherwise keep its slot). No
            # maximum connection age: it would cut WatchRun and ModelStreamInfer streams.
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            # A call's headers, the only bytes held before its token is checked.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", 2 * MAX_METADATA_BYTES),
        ]

    def _new_server(self, max_receive: int) -> grpc.aio.Server:
        return grpc.aio.server(
            options=self._grpc_options(max_receive),
            maximum_concurrent_rpcs=self.options.max_calls,
        )

    async def _bind(self, server: grpc.aio.Server, port: int, tls: TlsFiles | None) -> int:
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

    async def _start(self) -> None:
        opts = self.options
        server = self._new_server(opts.max_receive_bytes)
        self._server = server
        registrar: Any = Registrar(server, self.calls.wrap)
        for service in self.services:
            service.register(registrar)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        if opts.reflection:
            names = [s.name for s in self.services] + [HEALTH_SERVICE, reflection.SERVICE_NAME]
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
                reflection.aio.ReflectionServicer(names), registrar
            )
        try:
            self.port = await self._bind(server, opts.port, opts.tls)
            if opts.health_port is not None:
                probe = self._new_server(HEALTH_PORT_MAX_REQUEST)
                self._health_server = probe
                # Probes need no token, and the health port reads no request: it answers
                # for the server as a whole (services.common.health).
                self._health_gate = self._gate(None, read_open=False)
                health_pb2_grpc.add_HealthServicer_to_server(
                    self.health, Registrar(probe, self._health_gate.wrap)
                )
                self.health_port = await self._bind(probe, opts.health_port, None)
                await probe.start()
            await server.start()
        except BaseException:
            for started in (self._health_server, server):
                if started is not None:
                    await _discard(started)
            raise
        for name in ["", *(s.name for s in self.services)]:
            await self.health.set(name, SERVING)

    # Life cycle ----------------------------------------------------------------------

    def start(self) -> ManagedServer:
        """Bind the ports, start serving and report every service SERVING (an OSError
        leaves nothing running: no port, no thread)."""
        self._thread.start()
        try:
            self._call(self._start(), timeout=60)
        except BaseException:
            self._shut_loop()
            self._release_threads()
            raise
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
        """Report a name (a service, a model, ...) SERVING or NOT_SERVING (from any thread)."""
        if self._stopping or not self._thread.is_alive():
            return
        status = SERVING if serving else NOT_SERVING
        future = asyncio.run_coroutine_threadsafe(self.health.set(name, status), self._loop)
        if threading.current_thread() is not self._thread:
            future.result(10)

    def install_signal_handlers(self) -> None:
        """Drain and stop on SIGTERM and SIGINT (call from the main thread)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("received %s: draining", signal.Signals(signum).name)
            threading.Thread(target=self.stop, name="stride-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    async def _drain_notice(self) -> None:
        await self.health.enter_graceful_shutdown()
        for gate in (self.calls, self._health_gate):
            if gate is not None:
                gate.draining = True

    async def _close(self, server: grpc.aio.Server, grace: float) -> None:
        """gRPC's stop (it closes the port and says GOAWAY at once), then the calls held
        by the draining gates are answered UNAVAILABLE."""
        stopping = asyncio.ensure_future(server.stop(grace))
        await asyncio.sleep(0.01)
        for gate in (self.calls, self._health_gate):
            if gate is not None:
                gate.closing.set()
        await stopping

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING everywhere, drain calls in flight for the grace period, then release."""
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return
            self._stopping = True
        grace = self.options.grace_period if grace is None else grace
        try:
            running = self._thread.is_alive()
            if running:
                self._call(self._drain_notice(), timeout=10)
            drains = [
                threading.Thread(target=_logged(d), name="stride-drain") for d in self._on_drain
            ]
            for drain in drains:
                drain.start()
            if running and grace > 0:
                self._stopped.wait(min(DRAIN_NOTICE_S, grace))
            if self._server is not None and running:
                self._call(self._close(self._server, grace), timeout=grace + 30)
            for drain in drains:
                drain.join()
            if self._health_server is not None and running:
                self._call(self._health_server.stop(0), timeout=30)
            self._shut_loop()
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
        self._stream_pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _shut_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `stop` has finished (True) or the timeout passes (False)."""
        return self._stopped.wait(timeout)


async def _discard(server: grpc.aio.Server) -> None:
    """Stop a server whose start failed. gRPC keeps a port that was bound but never served
    until the server has started and stopped, so start it for that moment."""
    with contextlib.suppress(Exception):
        await server.start()
    with contextlib.suppress(Exception):
        await server.stop(None)


def _logged(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            step()
        except Exception:  # the other steps go on
            log.exception("drain step failed during shutdown")

    return run


# glibc serves an allocation this large or larger straight from the kernel (mmap) and gives
# it back on free. Its default starts at 128 kB but rises to the largest block freed so far,
# after which multi-MB request buffers come from the heap and its arenas (one per thread)
# keep their high-water marks.
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
