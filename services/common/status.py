"""The one table that maps domain errors to gRPC status codes (and those to HTTP statuses).

`status_for(exc)` walks the exception's class hierarchy, so a subclass of
`InvalidInput` defined by a service maps to INVALID_ARGUMENT without any
registration. Anything not in the table is unexpected: it becomes INTERNAL with
a generic message that carries only the request id, and the caller logs the
traceback on the server side.
"""

from __future__ import annotations

import grpc

from services.common import errors

STATUS_FOR_ERROR: dict[type[BaseException], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.NotReady: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
}

INTERNAL_MESSAGE = "internal error; the server log has the details (request id {request_id})"


def register_error(exc_type: type[BaseException], code: grpc.StatusCode) -> None:
    """Add a service's own error class to the table (most should subclass one above instead)."""
    if exc_type in STATUS_FOR_ERROR:
        raise ValueError(f"{exc_type.__name__} is mapped already to {STATUS_FOR_ERROR[exc_type]}")
    STATUS_FOR_ERROR[exc_type] = code


def status_for(exc: BaseException, request_id: str = "-") -> tuple[grpc.StatusCode, str, bool]:
    """Return (code, public message, expected) for an exception raised by a handler.

    `expected` is False for errors outside the table: their text may hold internals,
    so the public message is generic and the caller must log the exception.
    """
    for cls in type(exc).__mro__:
        code = STATUS_FOR_ERROR.get(cls)
        if code is not None:
            return code, str(exc) or cls.__name__, True
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE.format(request_id=request_id), False


# The HTTP status of each code, for REST front ends. Where NVIDIA Triton's HTTP server
# has the code, its choice (INTERNAL 500, NOT_FOUND 404, UNAVAILABLE 503, UNIMPLEMENTED
# 501, INVALID_ARGUMENT, ALREADY_EXISTS and CANCELLED 400); the others as grpc-gateway
# maps them (Triton's core has no such codes).
HTTP_STATUS_FOR_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.ALREADY_EXISTS: 400,
    grpc.StatusCode.CANCELLED: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status_for(exc: BaseException, request_id: str = "-") -> tuple[int, str, bool]:
    """Return (HTTP status, public message, expected): `status_for` for REST."""
    code, message, expected = status_for(exc, request_id)
    return HTTP_STATUS_FOR_CODE.get(code, 500), message, expected
