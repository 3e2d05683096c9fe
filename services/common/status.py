"""The one table that maps domain errors to gRPC status codes.

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
