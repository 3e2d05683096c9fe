"""The duties of every call, done once, for every method a ManagedServer hosts.

`CallGate.wrap` turns each method handler a service registers (generated default
methods included) into one that, in order:

1. checks the bearer token from the call's metadata (`services.common.auth`), and
   refuses a call that arrives while the server drains (UNAVAILABLE);
2. admits it: a unary call counts against `max_concurrent`, a stream takes a slot
   (`services.common.slots`; health Watch streams have slots of their own);
3. only then reads the request message: the read is counted in the memory budget
   (`services.common.budget`) at the largest message it may take in before it is
   posted, waiting for room if need be, then at what the request costs once read;
   waiting and reading take at most `receive_timeout` seconds; the message is parsed
   with the service's parser;
4. runs the handler: coroutines and async generators on the event loop, plain
   functions on a bounded thread pool (probes, which take microseconds, on the loop);
5. maps what it raised to a status code (`services.common.status`), counts the call
   by method and outcome (a call the client cancelled counts as CANCELLED), logs it
   with its request id, and ends a stream that moved no message for the idle timeout.

Why the handler reads the message itself: grpc.aio receives and parses a unary
request before its handler runs, and gRPC's flow control lets a stream whose read is
pending announce and send a message as large as the message limit. Every handler is
therefore registered as request-streaming: grpc.aio starts it as soon as the call's
headers arrive, and a call refused in steps 1-2 ends before a byte of its message is
read (what arrived in flight is dropped with the stream).

Open methods (health Check and Watch) answer callers without the token, but they do
not read the request for them either: such a caller gets the handler called with
`None` for the request, and health answers for the server as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc

from services.common.auth import BearerToken, authorization_values
from services.common.budget import Hold, ReadBudget
from services.common.counters import CallCounters
from services.common.errors import (
    DeadlineExceeded,
    InvalidInput,
    NotReady,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
)
from services.common.logs import request_id_var
from services.common.slots import Slots, peer_host
from services.common.status import status_for
from services.common.thread_context import Aborted, ThreadContext

log = logging.getLogger("stride.services.calls")

REQUEST_ID_KEY = "x-request-id"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
# Open without the token: what probes call. Health/List is not: it names every model.
HEALTH_METHODS = (HEALTH_CHECK, HEALTH_WATCH)
# A request id longer than this is replaced: it is logged and echoed with every call.
MAX_REQUEST_ID = 128
# What a request holds once read, per byte of its message, unless its service says
# otherwise (services.common.options.Service.request_costs): the message, and its
# parsed form while the handler runs.
DEFAULT_REQUEST_COST = 2.0

# Request ids: a per-process prefix and a counter (uuid4 costs a system call per call).
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count()
_END = object()  # a response stream's end
# The longest a call arriving while the server drains waits for the port to close.
DRAIN_HOLD_S = 1.0


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


def _request_id(metadata: Iterable[Any]) -> str:
    for key, value in metadata:
        if key == REQUEST_ID_KEY:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if 0 < len(text) <= MAX_REQUEST_ID:
                return text
            break
    return _new_request_id()


class _StreamIdle(Exception):
    pass


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen (no 'exception never retrieved' log)."""
    if not future.cancelled():
        future.exception()


async def _next_within(responses: Any, last: list[float], idle: float) -> Any:
    """The next item of an async iterator (or `_END`), while `last[0]` (the stream's latest
    activity) is within `idle` seconds; past that, _StreamIdle."""
    step = asyncio.ensure_future(responses.__anext__())
    try:
        while True:
            left = last[0] + idle - time.monotonic()
            done, _ = await asyncio.wait({step}, timeout=max(left, 0.0))
            if done:
                try:
                    return step.result()
                except StopAsyncIteration:
                    return _END
            if time.monotonic() - last[0] >= idle:
                raise _StreamIdle
    finally:
        # Left early (idle, or this call cancelled): the step may be pending or may have
        # finished in the same turn; either way its outcome is nobody's any more.
        if not step.done():
            step.cancel()
        step.add_done_callback(_retrieve)


class CallGate:
    """Authentication, admission, reading, lanes, error mapping, counters and logs."""

    def __init__(
        self,
        *,
        pool: futures.ThreadPoolExecutor,
        stream_pool: futures.ThreadPoolExecutor,
        token: BearerToken | None = None,
        open_methods: Iterable[str] = HEALTH_METHODS,
        probe_methods: Iterable[str] = (HEALTH_CHECK,),
        read_open: bool = True,
        max_concurrent: int | None = None,
        parsers: dict[str, Callable[[bytes], Any]] | None = None,
        counters: CallCounters | None = None,
        streams: Slots,
        watches: Slots,
        idle_timeout: float = 300.0,
        receive_timeout: float = 60.0,
        budget: ReadBudget | None = None,
        read_size: int = 0,
        request_costs: dict[str, float] | None = None,
    ) -> None:
        self._pool = pool
        self._stream_pool = stream_pool
        self._token = token
        self._open = frozenset(open_methods)
        self._probes = frozenset(probe_methods)
        self._read_open = read_open  # False: open methods never read (the health port)
        self._max_concurrent = max_concurrent
        self._parsers = dict(parsers or {})
        self._counters = counters
        self.streams = streams
        self.watches = watches
        self.idle_timeout = idle_timeout
        self.receive_timeout = receive_timeout  # seconds an admitted request may take to arrive
        # What a read is counted at before it is posted (the largest message gRPC accepts),
        # and per method what a request holds per byte once read.
        self.budget = budget
        self.read_size = read_size
        self._costs = dict(request_costs or {})
        self.in_flight = 0
        self.ended_idle = 0
        self.draining = False  # set when the server stops: new calls answer UNAVAILABLE
        self.closing = asyncio.Event()  # set once gRPC has begun to close the port

    # Registration ------------------------------------------------------------------

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` of `method` ("/package.Service/Method") with every duty of a call."""
        parse = self._parsers.get(method) or handler.request_deserializer
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            inner, reads_stream = handler.unary_unary, False
        elif handler.stream_unary is not None:
            inner, reads_stream = handler.stream_unary, True
        elif handler.unary_stream is not None:
            inner, reads_stream = handler.unary_stream, False
        else:
            inner, reads_stream = handler.stream_stream, True
        if handler.response_streaming:
            behaviour = self._streaming(inner, method, parse, reads_stream)
            return grpc.stream_stream_rpc_method_handler(behaviour, None, serialize)
        behaviour = self._unary(inner, method, parse, reads_stream)
        return grpc.stream_unary_rpc_method_handler(behaviour, None, serialize)

    # Steps shared by every call -------------------------------------------------------

    def _caller(self, metadata: tuple[Any, ...], method: str) -> bool:
        """Whether the call may read its request; raises when it may not go on at all.

        Without the token only open methods go on, and they do not read their request.
        """
        if self._token is None:
            return self._read_open or method not in self._open
        why = self._token.refusal(authorization_values(metadata))
        if why is not None:
            if method not in self._open:
                raise Unauthenticated(why)
            return False
        return self._read_open or method not in self._open

    async def _refuse_if_draining(self, method: str) -> None:
        """While the server drains, probes and health answer (NOT_SERVING, not ready) and
        other calls are refused (UNAVAILABLE), once the port is closing: held until then,
        a client does not send its next call into the moment gRPC stops, where a call it
        had accepted but not yet started is answered CANCELLED."""
        if method in self._probes or method in self._open:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), DRAIN_HOLD_S)
        raise NotReady("the server is shutting down; retry (another replica will answer)")

    async def _read(self, context: Any, parse: Any, method: str, holds: list[Hold]) -> Any:
        """The request message, read once the budget has room for it (the hold, appended to
        `holds`, is the caller's to release when the call ends)."""
        start = time.monotonic()
        if self.budget is not None:
            hold = await self.budget.reserve(
                peer_host(context.peer()), self.read_size, self.receive_timeout
            )
            holds.append(hold)
        left = self.receive_timeout - (time.monotonic() - start)
        try:
            async with asyncio.timeout(max(left, 0.0)):
                raw = await context.read()
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request message did not arrive within {self.receive_timeout:g} s "
                "(--receive-timeout)"
            ) from None
        if raw is grpc.aio.EOF:
            raise InvalidInput(f"{method}: the call carried no request message")
        if holds:
            holds[-1].settle(self._cost(method, len(raw)))
        return _parse(parse, raw, method)

    def _open_stream(self, context: Any, holds: list[Hold]) -> Hold | None:
        """A request stream's hold on the budget, for as long as it is open (or None)."""
        if self.budget is None:
            return None
        hold = self.budget.open_stream(peer_host(context.peer()), self.read_size)
        holds.append(hold)
        return hold

    async def _incoming(
        self, context: Any, parse: Any, method: str, last: list[float], hold: Hold | None
    ) -> Any:
        while True:
            if hold is not None:
                hold.settle(self.read_size)  # the last message is done with: read the next
            raw = await context.read()
            if raw is grpc.aio.EOF:
                return
            last[0] = time.monotonic()
            if hold is not None:
                hold.settle(max(self.read_size, self._cost(method, len(raw))))
            yield _parse(parse, raw, method)

    def _cost(self, method: str, size: int) -> int:
        return int(size * self._costs.get(method, DEFAULT_REQUEST_COST))

    def _status(self, exc: Exception, method: str, rid: str) -> tuple[grpc.StatusCode, str]:
        """The status a call that raised `exc` ends with (logged)."""
        if isinstance(exc, Aborted):
            return exc.code, exc.details
        code, message, expected = status_for(exc, rid)
        if expected:
            log.info("%s failed: %s %s", method, code.name, message, extra={"method": method})
        else:
            log.error(
                "%s raised an unexpected error", method, exc_info=exc, extra={"method": method}
            )
        return code, message

    # Unary responses ------------------------------------------------------------------

    def _unary(self, inner: Callable[..., Any], method: str, parse: Any, reads_stream: bool) -> Any:
        name = method.rsplit("/", 1)[-1]
        on_loop = inspect.iscoroutinefunction(inner)
        probe = method in self._probes
        limited = self._max_concurrent is not None and not probe
        counters = self._counters

        async def unary(requests: Any, context: Any) -> Any:
            start = time.perf_counter()
            metadata = context.invocation_metadata() or ()
            rid = _request_id(metadata)
            token = request_id_var.set(rid)
            context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
            outcome = "OK"
            admitted = False
            holds: list[Hold] = []
            try:
                if self.draining:
                    await self._refuse_if_draining(method)
                reads = self._caller(metadata, method)
                if limited:
                    if self.in_flight >= self._max_concurrent:  # type: ignore[operator]
                        raise ResourceExhausted(
                            f"{self._max_concurrent} calls are in flight, the most this server "
                            "serves at once (--max-concurrent-requests); try again later"
                        )
                    self.in_flight += 1
                    admitted = True
                if reads_stream:
                    hold = self._open_stream(context, holds)
                    given: Any = self._incoming(context, parse, method, [0.0], hold)
                elif reads:
                    given = await self._read(context, parse, method, holds)
                else:
                    given = None
                if on_loop:
                    return await inner(given, context)
                if probe:
                    return _finish_in_thread(inner, given, ThreadContext(context))
                call = ThreadContext(context)
                run = contextvars.copy_context().run
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    self._pool, run, _finish_in_thread, inner, given, call
                )
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            except grpc.aio.AbortError:  # the handler called context.abort
                outcome = _code_name(context)
                raise
            except Exception as exc:
                code, message = self._status(exc, method, rid)
                outcome = code.name
                await context.abort(code, message)
            finally:
                if outcome == "OK":
                    outcome = _code_name(context)
                if admitted:
                    self.in_flight -= 1
                for hold in holds:
                    hold.release()
                if counters is not None:
                    counters.record("grpc", name, outcome, int((time.perf_counter() - start) * 1e9))
                _end(method, start, token)

        return unary

    # Streamed responses ---------------------------------------------------------------

    def _idle_message(self) -> str:
        return (
            f"stream idle for more than {self.idle_timeout:g} s (no message either way; "
            "--stream-idle-timeout): open a new one when there is work"
        )

    def _streaming(
        self, inner: Callable[..., Any], method: str, parse: Any, reads_stream: bool
    ) -> Any:
        slots = self.watches if method == HEALTH_WATCH else self.streams
        idle = self.idle_timeout

        async def streaming(requests: Any, context: Any) -> None:
            start = time.perf_counter()
            metadata = context.invocation_metadata() or ()
            rid = _request_id(metadata)
            token = request_id_var.set(rid)
            context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
            held: str | None = None
            holds: list[Hold] = []
            thread_context: ThreadContext | None = None
            try:
                if self.draining:
                    await self._refuse_if_draining(method)
                reads = self._caller(metadata, method)
                held = slots.take(context.peer())
                last = [time.monotonic()]
                if reads_stream:
                    hold = self._open_stream(context, holds)
                    given: Any = self._incoming(context, parse, method, last, hold)
                elif reads:
                    given = await self._read(context, parse, method, holds)
                else:
                    given = None
                if inspect.iscoroutinefunction(inner):  # writes with context.write itself
                    watched = _WriteWatch(context, last)
                    await _until_idle(inner(given, watched), last, idle)
                    return
                if inspect.isasyncgenfunction(inner):
                    responses: Any = inner(given, context)
                else:
                    thread_context = ThreadContext(context)
                    responses = self._from_thread(inner, given, thread_context, reads_stream)
                while True:
                    response = await _next_within(responses, last, idle)
                    if response is _END:
                        break
                    last[0] = time.monotonic()
                    await context.write(response)
                    last[0] = time.monotonic()
                if thread_context is not None:
                    thread_context.finish()
            except _StreamIdle:
                self.ended_idle += 1
                log.info("%s: stream idle for more than %.0f s, ended", method, idle)
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._idle_message())
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await context.abort(*self._status(exc, method, rid))
            finally:
                if thread_context is not None:
                    thread_context.end()
                if held is not None:
                    slots.give(held)
                for hold in holds:
                    hold.release()
                _end(method, start, token)

        return streaming

    def _from_thread(
        self, inner: Callable[..., Any], given: Any, context: ThreadContext, reads_stream: bool
    ) -> AsyncIterator[Any]:
        """A plain-function stream handler's responses, each produced on the stream threads
        (a generator blocked between messages holds a stream thread, never a handler one)."""
        loop = asyncio.get_running_loop()
        pool = self._stream_pool
        if reads_stream:
            given = _blocking_iterator(given, loop)

        async def responses() -> AsyncIterator[Any]:
            run = contextvars.copy_context().run
            produced = await loop.run_in_executor(
                pool, run, _finish_in_thread, inner, given, context
            )
            if produced is None:
                return
            iterator = iter(produced)
            try:
                while True:
                    item = await loop.run_in_executor(pool, run, _next_or_end, iterator)
                    if item is _END:
                        break
                    yield item
            finally:
                # The generator may still be running on its thread: close it there, after.
                pool.submit(_close, iterator)
            context.raise_if_failed()

        return responses()


def _code_name(context: Any) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "OK"


def _parse(parse: Any, raw: bytes, method: str) -> Any:
    if parse is None:
        return raw
    try:
        return parse(raw)
    except ServiceError:
        raise
    except Exception as exc:  # protobuf's DecodeError and its kin
        raise InvalidInput(
            f"{method}: the request is not a valid message of this method ({type(exc).__name__})"
        ) from None


def _finish_in_thread(inner: Callable[..., Any], request: Any, context: ThreadContext) -> Any:
    """Run a plain-function handler; a status it set with `set_code` ends the call."""
    try:
        response = inner(request, context)
    except Exception:
        context.raise_if_failed()
        raise
    context.raise_if_failed()
    return response


def _close(iterator: Iterator[Any]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        # ValueError: still running; it ends by itself once its call is inactive.
        with contextlib.suppress(ValueError):
            close()


def _next_or_end(iterator: Iterator[Any]) -> Any:
    return next(iterator, _END)


async def _anext(requests: AsyncIterator[Any]) -> Any:
    return await requests.__anext__()


def _blocking_iterator(requests: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> Any:
    """An async iterator of the loop, iterated from a thread."""
    while True:
        try:
            yield asyncio.run_coroutine_threadsafe(_anext(requests), loop).result()
        except StopAsyncIteration:
            return


class _WriteWatch:
    """A call's context whose `write` marks the stream active (for the idle timeout)."""

    def __init__(self, context: Any, last: list[float]) -> None:
        self._context = context
        self._last = last

    async def write(self, message: Any) -> None:
        self._last[0] = time.monotonic()
        await self._context.write(message)
        self._last[0] = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _until_idle(work: Any, last: list[float], idle: float) -> Any:
    """Await `work` while `last[0]` is within `idle` seconds; past that, _StreamIdle."""
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
            task.add_done_callback(_retrieve)


def _end(method: str, start: float, token: contextvars.Token[str]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        ms = (time.perf_counter() - start) * 1e3
        log.debug("%s done in %.3f ms", method, ms, extra={"method": method, "ms": round(ms, 3)})
    request_id_var.reset(token)


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
