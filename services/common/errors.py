"""Domain errors shared by Stride's services.

These classes know nothing of gRPC: model execution, batching and the run store
raise them, and `services.common.status` maps them to gRPC status codes in one
table. Each message should say what was wrong and what was expected.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a service reports to its client as-is (the message is public)."""


class InvalidInput(ServiceError, ValueError):
    """The request is malformed: wrong type, shape, size or value (INVALID_ARGUMENT)."""


class ModelNotFound(ServiceError, LookupError):
    """The named model, version or resource does not exist (NOT_FOUND)."""


class NotReady(ServiceError):
    """The resource exists but cannot serve yet or any more (UNAVAILABLE)."""


class ResourceExhausted(ServiceError):
    """A queue, a size limit or a concurrency cap is full (RESOURCE_EXHAUSTED)."""


class DeadlineExceeded(ServiceError, TimeoutError):
    """The request's timeout passed before it was served (DEADLINE_EXCEEDED)."""


class FailedPrecondition(ServiceError):
    """The system is not in the state the request needs (FAILED_PRECONDITION)."""


class AlreadyExists(ServiceError):
    """The thing to create exists already (ALREADY_EXISTS)."""


class Unimplemented(ServiceError, NotImplementedError):
    """The call or option is not supported by this server (UNIMPLEMENTED)."""


class Unauthenticated(ServiceError):
    """The caller did not prove who it is (UNAUTHENTICATED)."""


class PermissionDenied(ServiceError):
    """The caller may not do this (PERMISSION_DENIED)."""


class Cancelled(ServiceError):
    """The request was cancelled, by the client or by shutdown (CANCELLED)."""


# Names a client sends (models, services, runs) are echoed in error messages; one of a
# few megabytes would be echoed whole, in the answer and in the server's log.
SHOWN_CHARACTERS = 80


def shown(name: str, limit: int = SHOWN_CHARACTERS) -> str:
    """`name` quoted for a message, cut to `limit` characters (saying how long it was)."""
    if len(name) <= limit:
        return repr(name)
    return f"{name[:limit]!r}... ({len(name)} characters)"
