"""One server interceptor for every cross-cutting concern of a call.

In order: bearer-token authentication (services named in `open_services`, such as
health, stay open), a request id (taken from the `x-request-id` metadata or made
up, returned in trailing metadata and put in the log context), error mapping
through `services.common.status`, and a structured log line per call. Doing it in
one interceptor keeps the per-call overhead to one wrapper.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from services.common.logs import request_id_var
from services.common.status import status_for

log = logging.getLogger("stride.services.calls")

REQUEST_ID_KEY = "x-request-id"


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
    """Authentication, request ids, error mapping and call logs for every handler."""

    def __init__(
        self,
        *,
        auth_token: str | None = None,
        open_services: Iterable[str] = ("grpc.health.v1.Health",),
    ) -> None:
        self._token = f"Bearer {auth_token}".encode() if auth_token else None
        self._open = tuple(f"/{name}/" for name in open_services)
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if self._token is not None and not method.startswith(self._open):
            given = _metadata_value(
                handler_call_details.invocation_metadata,
                "authorization",
            )
            if given is None or not hmac.compare_digest(given.encode(), self._token):
                reason = "missing" if given is None else "invalid"
                message = f"{reason} bearer token: send metadata 'authorization: Bearer <token>'"
                return _deny(continuation(handler_call_details), message)
        if method not in self._wrapped:
            self._wrapped[method] = _wrap(continuation(handler_call_details), method)
        return self._wrapped[method]


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


def _wrap(handler: grpc.RpcMethodHandler | None, method: str) -> grpc.RpcMethodHandler | None:
    if handler is None:
        return None
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
            rid, token, start = _begin(context)
            try:
                return inner(request, context)
            except Exception as exc:
                if _aborted(context):
                    raise
                _fail(exc, context, method, rid)
            finally:
                _end(method, start, token)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            rid, token, start = _begin(context)
            try:
                yield from inner_stream(request, context)
            except Exception as exc:
                if _aborted(context):
                    raise
                _fail(exc, context, method, rid)
            finally:
                _end(method, start, token)

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    # Client- and bidi-streaming (server reflection): authentication only.
    return handler
