"""One server interceptor for every cross-cutting concern of a call.

In order: bearer-token authentication (the exact method names in `open_methods`,
such as health's, stay open), a request id (taken from the `x-request-id`
metadata or made up, returned in trailing metadata and put in the log context),
the lane a call runs on, error mapping through `services.common.status`, and a
structured log line per call. Doing it in one interceptor keeps the per-call
overhead to one wrapper.

Lanes: gRPC runs a handler on the thread pool its behaviour names in
`experimental_thread_pool`, else on the server's pool. Probes (health Check and
the methods a service lists as probes) get a small pool of their own, so they
answer while every handler thread is busy; streaming calls run on the pool of a
`StreamGuard`, which bounds their count and ends idle ones; everything else
shares the handler threads, optionally under a cap on calls in flight.

A wrapper is made once per method that a service implements and kept; a method
nobody implements costs nothing and is never remembered, so made-up method
names cannot grow the server's memory.

Parsers: a service may give its own request parser for a method, to look at the
bytes before protobuf builds the message (protobuf makes an object of every
element of a repeated field, so a small message can parse into a large one). A
parser that raises a `ServiceError` refuses the message: the call answers that
error's status, as if the handler had raised it.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

import grpc

from services.common.counters import CallCounters
from services.common.errors import ResourceExhausted, ServiceError
from services.common.logs import request_id_var
from services.common.status import status_for
from services.common.streams import StreamGuard

log = logging.getLogger("stride.services.calls")

REQUEST_ID_KEY = "x-request-id"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# Open without the token: what probes call with a service name they already know.
# Health/List is not: it names every model to whoever asks.
HEALTH_METHODS = (HEALTH_CHECK, "/grpc.health.v1.Health/Watch")
# Far more than any server here implements; a generic handler that answers every name
# would otherwise make the cache as large as the names clients invent.
MAX_CACHED_METHODS = 1024


def _metadata_value(metadata: Iterable[Any] | None, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def _aborted(context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after setting the code: let it through.
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK


class ServiceInterceptor(grpc.ServerInterceptor):
    """Authentication, request ids, lanes, error mapping and call logs for every handler."""

    def __init__(
        self,
        *,
        auth_token: str | None = None,
        open_methods: Iterable[str] = HEALTH_METHODS,
        probe_methods: Iterable[str] = (HEALTH_CHECK,),
        probe_pool: futures.ThreadPoolExecutor | None = None,
        streams: StreamGuard | None = None,
        max_concurrent: int | None = None,
        parsers: dict[str, Callable[[bytes], Any]] | None = None,
        counters: CallCounters | None = None,
    ) -> None:
        self._token = f"Bearer {auth_token}".encode() if auth_token else None
        self._open = frozenset(open_methods)  # exact names: "/package.Service/Method"
        self._probes = frozenset(probe_methods)
        self._probe_pool = probe_pool
        self._streams = streams
        self._max_concurrent = max_concurrent
        self._admission = threading.BoundedSemaphore(max_concurrent) if max_concurrent else None
        self._parsers = dict(parsers or {})  # exact method name -> request parser
        self._counters = counters  # unary calls by method and status code, for metrics
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        # Runs on gRPC's serving thread for every call: keep it to look-ups.
        method: str = handler_call_details.method
        if self._token is not None and method not in self._open:
            given = _metadata_value(
                handler_call_details.invocation_metadata,
                "authorization",
            )
            if given is None or not hmac.compare_digest(given.encode(), self._token):
                reason = "missing" if given is None else "invalid"
                message = f"{reason} bearer token: send metadata 'authorization: Bearer <token>'"
                return _deny(continuation(handler_call_details), message)
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: UNIMPLEMENTED, and nothing remembered
        wrapped = self._wrap(handler, method)
        if len(self._wrapped) < MAX_CACHED_METHODS:
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        des, ser = handler.request_deserializer, handler.response_serializer
        parser = self._parsers.get(method)
        if parser is not None:
            des = _refusing(parser)
        if handler.unary_unary is not None:
            if method in self._probes:
                behaviour = _unary(handler.unary_unary, method, None, None, self._counters)
                _run_on(behaviour, self._probe_pool)
            else:
                behaviour = _unary(
                    handler.unary_unary,
                    method,
                    self._admission,
                    self._max_concurrent,
                    self._counters,
                )
            return grpc.unary_unary_rpc_method_handler(behaviour, des, ser)
        if handler.unary_stream is not None:
            stream = _streaming(handler.unary_stream, method, self._streams, reads=False)
            return grpc.unary_stream_rpc_method_handler(_run_on(stream, self._pool()), des, ser)
        if handler.stream_unary is not None:
            unary = _client_streaming(handler.stream_unary, method, self._streams)
            return grpc.stream_unary_rpc_method_handler(_run_on(unary, self._pool()), des, ser)
        stream = _streaming(handler.stream_stream, method, self._streams, reads=True)
        return grpc.stream_stream_rpc_method_handler(_run_on(stream, self._pool()), des, ser)

    def _pool(self) -> futures.ThreadPoolExecutor | None:
        return self._streams.pool if self._streams is not None else None


class Refused:
    """What a request parser's refusal becomes: gRPC calls the parser outside any handler,
    where an exception would answer INTERNAL; the handler raises `error` instead."""

    __slots__ = ("error",)

    def __init__(self, error: ServiceError) -> None:
        self.error = error


def _refusing(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except ServiceError as exc:
            return Refused(exc)

    return deserialize


def _accept(request: Any) -> Any:
    if type(request) is Refused:
        raise request.error
    return request


def _accepted(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        yield _accept(request)


def _run_on(behaviour: Any, pool: futures.ThreadPoolExecutor | None) -> Any:
    """Make gRPC run `behaviour` on `pool` (its documented per-method thread pool hook)."""
    if pool is not None:
        behaviour.experimental_thread_pool = pool
    return behaviour


def _deny(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler | None:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""
    if handler is None:
        return None

    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(abort, des, ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(abort, des, ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(abort, des, ser)
    return grpc.stream_stream_rpc_method_handler(abort, des, ser)


def _begin(context: grpc.ServicerContext) -> tuple[str, contextvars.Token[str], float]:
    rid = _metadata_value(context.invocation_metadata(), REQUEST_ID_KEY) or uuid.uuid4().hex[:16]
    token = request_id_var.set(rid)
    context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
    return rid, token, time.perf_counter()


def _fail(exc: Exception, context: grpc.ServicerContext, method: str, rid: str) -> None:
    if _aborted(context):
        raise exc
    if isinstance(exc, grpc.RpcError) and not context.is_active():
        # The call is over (the client left, or the idle-stream watchdog ended it) and its
        # request iterator says so: nobody is left to answer.
        log.debug("%s ended by the client or the server", method, extra={"method": method})
        return
    code, message, expected = status_for(exc, rid)
    if expected:
        log.info("%s failed: %s %s", method, code.name, message, extra={"method": method})
    else:
        log.error("%s raised an unexpected error", method, exc_info=exc, extra={"method": method})
    context.abort(code, message)


def _end(method: str, start: float, token: contextvars.Token[str]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        ms = (time.perf_counter() - start) * 1e3
        log.debug("%s done in %.3f ms", method, ms, extra={"method": method, "ms": round(ms, 3)})
    request_id_var.reset(token)


def _unary(
    inner: Callable[[Any, grpc.ServicerContext], Any],
    method: str,
    admission: threading.BoundedSemaphore | None,
    limit: int | None,
    counters: CallCounters | None = None,
) -> Callable[[Any, grpc.ServicerContext], Any]:
    name = method.rsplit("/", 1)[-1]

    def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
        rid, token, start = _begin(context)
        admitted = False
        outcome = "OK"
        try:
            if admission is not None:
                admitted = admission.acquire(blocking=False)
                if not admitted:
                    raise ResourceExhausted(
                        f"{limit} calls are in flight, the most this server serves at once "
                        "(--max-concurrent-requests); try again later"
                    )
            return inner(_accept(request), context)
        except Exception as exc:
            outcome = "ERROR"
            _fail(exc, context, method, rid)
        finally:
            if admitted:
                assert admission is not None
                admission.release()
            if counters is not None:
                if outcome != "OK":
                    code = context.code()
                    outcome = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                ns = int((time.perf_counter() - start) * 1e9)
                counters.record("grpc", name, outcome, ns)
            _end(method, start, token)

    return unary_unary


def _streaming(
    inner: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
    method: str,
    streams: StreamGuard | None,
    *,
    reads: bool,
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    """Server- and bidi-streaming: a stream slot; each message either way counts as activity."""

    def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        rid, token, start = _begin(context)
        try:
            if streams is None:
                yield from inner(_accepted(request) if reads else _accept(request), context)
                return
            with streams.slot(method, context) as stream:
                given = _accepted(stream.requests(request)) if reads else _accept(request)
                yield from stream.responses(inner(given, context))
        except Exception as exc:
            _fail(exc, context, method, rid)
        finally:
            _end(method, start, token)

    return streaming


def _client_streaming(
    inner: Callable[[Iterator[Any], grpc.ServicerContext], Any],
    method: str,
    streams: StreamGuard | None,
) -> Callable[[Iterator[Any], grpc.ServicerContext], Any]:
    def client_streaming(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        rid, token, start = _begin(context)
        try:
            if streams is None:
                return inner(_accepted(requests), context)
            with streams.slot(method, context) as stream:
                return inner(_accepted(stream.requests(requests)), context)
        except Exception as exc:
            _fail(exc, context, method, rid)
        finally:
            _end(method, start, token)

    return client_streaming
