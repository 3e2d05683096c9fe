"""The interceptor of the asyncio server: every cross-cutting concern of a call, on one loop.

The same duties as `services.common.interceptors.ServiceInterceptor` (bearer token,
request ids, error mapping, call logs and counters, a cap on unary calls in flight,
request parsers that refuse a message from its bytes, a cap on open streams and an idle
timeout for them), for grpc.aio, where a call is a task on the server's event loop:

- a coroutine handler (ModelInfer) runs on the loop;
- a plain-function unary handler runs on the handler thread pool, with a context of
  its own (grpc.aio's context for such handlers lacks `code()` and `is_active()`),
  except probes, which are microseconds of work and run on the loop, so they answer
  while every handler thread is busy;
- streaming handlers must be coroutines or async generators: each holds one of
  `max_streams` slots, and one that moves no message either way for the idle
  timeout ends with DEADLINE_EXCEEDED. A handler that writes with `context.write`
  (health Watch) gets a context whose writes count as activity.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import inspect
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent import futures
from typing import Any

import grpc

from services.common.counters import CallCounters
from services.common.errors import ResourceExhausted
from services.common.interceptors import (
    HEALTH_CHECK,
    HEALTH_METHODS,
    REQUEST_ID_KEY,
    _accept,
    _metadata_value,
    _refusing,
)
from services.common.logs import request_id_var
from services.common.status import status_for

log = logging.getLogger("stride.services.calls")

# Request ids: a per-process prefix and a counter (uuid4 costs a system call per call).
_PREFIX = os.urandom(4).hex()
_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):08x}"


class _Aborted(Exception):
    """`abort()` called by a handler on the thread pool; the loop aborts the call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _StreamIdle(Exception):
    pass


class PoolContext:
    """What a plain-function handler on the thread pool may ask of its call."""

    def __init__(self, context: Any, deadline: float | None) -> None:
        self._context = context
        self._metadata = tuple(context.invocation_metadata() or ())
        self._deadline = deadline
        self._peer = context.peer()

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        return not self._context.done()

    def peer(self) -> str:
        return str(self._peer)

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)


class _WriteWatch:
    """A call's context whose `write` marks the stream active (for the idle timeout)."""

    def __init__(self, context: Any, last: list[float]) -> None:
        self._context = context
        self._last = last

    async def write(self, message: Any) -> None:
        self._last[0] = time.monotonic()
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _until_idle(work: Awaitable[Any], last: list[float], idle: float) -> Any:
    """Await `work` while `last[0]` (the stream's latest activity) is within `idle`
    seconds; past that, cancel it and raise _StreamIdle."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            left = last[0] + idle - time.monotonic()
            done, _ = await asyncio.wait({task}, timeout=max(left, 0.0))
            if done:
                return task.result()
            if time.monotonic() - last[0] >= idle:
                raise _StreamIdle
    finally:
        if not task.done():
            task.cancel()


def _deadline(context: Any) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e6 else time.monotonic() + remaining


class CallWrapper:
    """Authentication, request ids, lanes, limits, error mapping and call logs (grpc.aio).

    Not a grpc.aio interceptor: those run a coroutine per call before the handler is even
    found. Each handler is wrapped once, when it is registered (see `Registrar`), and the
    wrapper checks the token itself.
    """

    def __init__(
        self,
        *,
        pool: futures.ThreadPoolExecutor,
        auth_token: str | None = None,
        open_methods: Iterable[str] = HEALTH_METHODS,
        probe_methods: Iterable[str] = (HEALTH_CHECK,),
        max_concurrent: int | None = None,
        parsers: dict[str, Callable[[bytes], Any]] | None = None,
        counters: CallCounters | None = None,
        max_streams: int = 32,
        idle_timeout: float = 300.0,
    ) -> None:
        self._pool = pool
        self._token = f"Bearer {auth_token}".encode() if auth_token else None
        self._open = frozenset(open_methods)
        self._probes = frozenset(probe_methods)
        self._max_concurrent = max_concurrent
        self._in_flight = 0
        self._parsers = dict(parsers or {})
        self._counters = counters
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self.open_streams = 0
        self.refused_streams = 0
        self.ended_idle = 0

    def _denied(self, context: Any, method: str) -> str | None:
        """Why the call may not go on (a missing or wrong token), None if it may."""
        if self._token is None or method in self._open:
            return None
        given = _metadata_value(context.invocation_metadata(), "authorization")
        if given is not None and hmac.compare_digest(given.encode(), self._token):
            return None
        reason = "missing" if given is None else "invalid"
        return f"{reason} bearer token: send metadata 'authorization: Bearer <token>'"

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` of `method` ("/package.Service/Method") with every concern of a call."""
        return self._wrap(handler, method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        des, ser = handler.request_deserializer, handler.response_serializer
        parser = self._parsers.get(method)
        if parser is not None:
            des = _refusing(parser)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), des, ser
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, reads=False), des, ser
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(handler.stream_stream, method, reads=True), des, ser
            )
        return grpc.stream_unary_rpc_method_handler(
            self._client_streaming(handler.stream_unary, method), des, ser
        )

    # Unary calls -----------------------------------------------------------------

    def _unary(self, inner: Callable[..., Any], method: str) -> Callable[..., Awaitable[Any]]:
        name = method.rsplit("/", 1)[-1]
        on_loop = inspect.iscoroutinefunction(inner)
        probe = method in self._probes
        limited = self._max_concurrent is not None and not probe
        pool = self._pool
        counters = self._counters

        async def unary_unary(request: Any, context: Any) -> Any:
            denied = self._denied(context, method)
            if denied is not None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, denied)
            rid, token, start = _begin(context)
            outcome = "OK"
            admitted = False
            try:
                if limited:
                    if self._in_flight >= self._max_concurrent:  # type: ignore[operator]
                        raise ResourceExhausted(
                            f"{self._max_concurrent} calls are in flight, the most this server "
                            "serves at once (--max-concurrent-requests); try again later"
                        )
                    self._in_flight += 1
                    admitted = True
                request = _accept(request)
                if on_loop:
                    return await inner(request, context)
                call = PoolContext(context, _deadline(context))
                if probe:
                    return inner(request, call)
                run = contextvars.copy_context().run
                return await asyncio.get_running_loop().run_in_executor(
                    pool, run, inner, request, call
                )
            except Exception as exc:
                status = _status(exc, method, rid)
                if status is None:
                    code = context.code()
                    outcome = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                    raise
                outcome = status[0].name
                await context.abort(*status)
            finally:
                if admitted:
                    self._in_flight -= 1
                if counters is not None:
                    counters.record("grpc", name, outcome, int((time.perf_counter() - start) * 1e9))
                _end(method, start, token)

        return unary_unary

    # Streams ---------------------------------------------------------------------

    def _take_slot(self) -> None:
        if self.open_streams >= self.max_streams:
            self.refused_streams += 1
            raise ResourceExhausted(
                f"{self.max_streams} streams are open already, the most this server "
                "allows (--max-streams); close one or try again later"
            )
        self.open_streams += 1

    def _idle_message(self) -> str:
        return (
            f"stream idle for more than {self.idle_timeout:g} s (no message either way; "
            "--stream-idle-timeout): open a new one when there is work"
        )

    def _streaming(self, inner: Callable[..., Any], method: str, *, reads: bool) -> Any:
        if not (inspect.isasyncgenfunction(inner) or inspect.iscoroutinefunction(inner)):
            raise TypeError(
                f"{method}: the asyncio server needs coroutine or async-generator stream handlers"
            )
        writes_itself = inspect.iscoroutinefunction(inner)
        idle = self.idle_timeout

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            denied = self._denied(context, method)
            if denied is not None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, denied)
            rid, token, start = _begin(context)
            slot = False
            try:
                self._take_slot()
                slot = True
                last = [time.monotonic()]
                given = _marked(request, last) if reads else _accept(request)
                if writes_itself:
                    await _until_idle(inner(given, _WriteWatch(context, last)), last, idle)
                    return
                responses = inner(given, context).__aiter__()
                while True:
                    step = asyncio.ensure_future(responses.__anext__())
                    while True:
                        left = last[0] + idle - time.monotonic()
                        done, _ = await asyncio.wait({step}, timeout=max(left, 0.0))
                        if done:
                            break
                        if time.monotonic() - last[0] >= idle:
                            step.cancel()
                            raise _StreamIdle
                    try:
                        response = step.result()
                    except StopAsyncIteration:
                        return
                    last[0] = time.monotonic()
                    yield response
            except _StreamIdle:
                self.ended_idle += 1
                log.info("%s: stream idle for more than %.0f s, ended", method, idle)
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._idle_message())
            except Exception as exc:
                await _fail(exc, context, method, rid)
            finally:
                if slot:
                    self.open_streams -= 1
                _end(method, start, token)

        if writes_itself:

            async def writing(request: Any, context: Any) -> None:
                async for _ in streaming(request, context):
                    pass

            return writing
        return streaming

    def _client_streaming(self, inner: Callable[..., Any], method: str) -> Any:
        if not inspect.iscoroutinefunction(inner):
            raise TypeError(f"{method}: the asyncio server needs coroutine stream handlers")

        async def client_streaming(requests: Any, context: Any) -> Any:
            denied = self._denied(context, method)
            if denied is not None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, denied)
            rid, token, start = _begin(context)
            slot = False
            try:
                self._take_slot()
                slot = True
                last = [time.monotonic()]
                return await inner(_marked(requests, last), context)
            except Exception as exc:
                await _fail(exc, context, method, rid)
            finally:
                if slot:
                    self.open_streams -= 1
                _end(method, start, token)

        return client_streaming


async def _marked(requests: AsyncIterator[Any], last: list[float]) -> AsyncIterator[Any]:
    async for request in requests:
        last[0] = time.monotonic()
        yield _accept(request)


def _begin(context: Any) -> tuple[str, contextvars.Token[str], float]:
    rid = _metadata_value(context.invocation_metadata(), REQUEST_ID_KEY) or _new_request_id()
    token = request_id_var.set(rid)
    context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
    return rid, token, time.perf_counter()


def _end(method: str, start: float, token: contextvars.Token[str]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        ms = (time.perf_counter() - start) * 1e3
        log.debug("%s done in %.3f ms", method, ms, extra={"method": method, "ms": round(ms, 3)})
    request_id_var.reset(token)


def _status(exc: Exception, method: str, rid: str) -> tuple[grpc.StatusCode, str] | None:
    """The status a failed call ends with (logged), None when the handler aborted it."""
    if isinstance(exc, _Aborted):
        return exc.code, exc.details
    if isinstance(exc, grpc.aio.AbortError):
        return None
    code, message, expected = status_for(exc, rid)
    if expected:
        log.info("%s failed: %s %s", method, code.name, message, extra={"method": method})
    else:
        log.error("%s raised an unexpected error", method, exc_info=exc, extra={"method": method})
    return code, message


async def _fail(exc: Exception, context: Any, method: str, rid: str) -> None:
    """End the call with the status `exc` maps to (raises grpc.aio.AbortError)."""
    status = _status(exc, method, rid)
    if status is None:
        raise exc
    await context.abort(*status)


class Registrar:
    """Stands for a grpc.aio server while services register: every method handler they add
    is wrapped once by `wrap(handler, method)`, then added to the real server."""

    def __init__(
        self,
        server: grpc.aio.Server,
        wrap: Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler],
    ) -> None:
        self._server = server
        self._wrap = wrap

    def _wrapped(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> dict[str, grpc.RpcMethodHandler]:
        return {name: self._wrap(h, f"/{service}/{name}") for name, h in handlers.items()}

    def add_generic_rpc_handlers(self, generic_handlers: Iterable[Any]) -> None:
        for generic in generic_handlers:
            methods = getattr(generic, "_method_handlers", None)
            service = generic.service_name() if hasattr(generic, "service_name") else None
            if not isinstance(methods, dict) or not service:
                raise TypeError(
                    f"cannot wrap {type(generic).__name__}: register services with their "
                    "generated add_..._to_server function"
                )
            short = {full.rsplit("/", 1)[-1]: h for full, h in methods.items()}
            self._server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, self._wrapped(service, short)),)
            )

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(service, self._wrapped(service, handlers))
