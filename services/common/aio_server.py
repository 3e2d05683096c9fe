"""`ManagedServer`'s twin on grpc.aio: one event loop serves every call.

Same construction, options and life cycle as services.common.server.ManagedServer
(health, reflection, TLS, a plaintext health port, a token, limits, graceful drain,
signal handlers), but calls are tasks on one event loop in a thread of its own
("grpc-loop"), so a request is never handed from gRPC's polling thread to a handler
thread and back: at concurrency, those hand-overs (each waiting for the GIL and a
wake-up) were most of `stride serve`'s time (docs/performance.md). Coroutine handlers
run on the loop; plain-function unary handlers on `handler_threads` threads
(services.common.aio_calls has the lanes). The public methods are called from any
thread, as ManagedServer's.
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
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from services.common.aio_calls import CallWrapper, Registrar
from services.common.counters import CallCounters
from services.common.interceptors import HEALTH_CHECK
from services.common.server import HEALTH_SERVICE, ServerOptions, Service, TlsFiles, _logged

log = logging.getLogger("stride.services.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
T = TypeVar("T")


class AsyncManagedServer:
    """A grpc.aio server with health, reflection, interceptors and graceful shutdown."""

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
        self.counters = counters
        self.services = list(services)
        self.health = health_aio.HealthServicer()
        self._on_stop = list(on_stop)
        self._on_drain = list(on_drain)
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._pool = futures.ThreadPoolExecutor(
            max_workers=options.handler_threads, thread_name_prefix="grpc"
        )
        self.calls = self._interceptor(options.auth_token)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="grpc-loop", daemon=True)
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self.port = 0
        self.health_port: int | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the loop and wait for it (from any thread but the loop's)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _grpc_options(self) -> list[tuple[str, int]]:
        size = int(self.options.max_message_mb * 1024 * 1024)
        return [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0),
        ]

    def _interceptor(self, auth_token: str | None) -> CallWrapper:
        probes = [HEALTH_CHECK, *(m for s in self.services for m in s.probe_methods())]
        parsers = {f"/{s.name}/{m}": parse for s in self.services for m, parse in s.parsers.items()}
        return CallWrapper(
            pool=self._pool,
            auth_token=auth_token,
            open_methods=self.options.open_methods,
            probe_methods=probes,
            max_concurrent=self.options.max_concurrent_requests,
            parsers=parsers,
            counters=self.counters,
            max_streams=self.options.max_streams,
            idle_timeout=self.options.stream_idle_timeout,
        )

    async def _bind(self, server: grpc.aio.Server, port: int, tls: TlsFiles | None) -> int:
        address = f"{self.options.host}:{port}"
        try:
            if tls is not None:
                bound = server.add_secure_port(address, tls.credentials())
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot listen on {address}: port in use or address not available")
        return bound

    async def _start(self) -> None:
        opts = self.options
        server = grpc.aio.server(options=self._grpc_options())
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
                probe = grpc.aio.server(options=self._grpc_options())
                self._health_server = probe
                wrapper = self._interceptor(None)
                health_pb2_grpc.add_HealthServicer_to_server(
                    self.health,
                    Registrar(probe, wrapper.wrap),
                )
                self.health_port = await self._bind(probe, opts.health_port, None)
                await probe.start()
            await server.start()
        except BaseException:
            for started in (self._health_server, server):
                if started is not None:
                    with contextlib.suppress(Exception):
                        await started.stop(None)
            raise
        for name in ["", *(s.name for s in self.services)]:
            await self.health.set(name, SERVING)

    def start(self) -> AsyncManagedServer:
        """Bind the ports, start serving and report every service SERVING (an OSError
        leaves nothing running)."""
        self._thread.start()
        try:
            self._call(self._start(), timeout=60)
        except BaseException:
            self._shut_loop()
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise
        log.info(
            "serving %s on %s:%d%s (asyncio)",
            ", ".join(s.name for s in self.services),
            self.options.host,
            self.port,
            " (TLS)" if self.options.tls else "",
        )
        return self

    @property
    def stopping(self) -> bool:
        return self._stopping

    def set_health(self, name: str, serving: bool) -> None:
        """Report a service name SERVING or NOT_SERVING (from any thread)."""
        if self._stopping or not self._thread.is_alive():
            return
        status = SERVING if serving else NOT_SERVING
        future = asyncio.run_coroutine_threadsafe(self.health.set(name, status), self._loop)
        if threading.current_thread() is not self._thread:
            future.result(10)

    def install_signal_handlers(self) -> None:
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
            if self._thread.is_alive():
                self._call(self.health.enter_graceful_shutdown(), timeout=10)
            drains = [
                threading.Thread(target=_logged(d), name="stride-drain") for d in self._on_drain
            ]
            for drain in drains:
                drain.start()
            if self._server is not None and self._thread.is_alive():
                self._call(self._server.stop(grace), timeout=grace + 30)
            for drain in drains:
                drain.join()
            if self._health_server is not None and self._thread.is_alive():
                self._call(self._health_server.stop(0), timeout=30)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._shut_loop()
            for release in self._on_stop:
                try:
                    release()
                except Exception:
                    log.exception("release step failed during shutdown")
            log.info("stopped")
        finally:
            self._stopped.set()

    def _shut_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)
