"""Domain errors of the analysis service.

They subclass the shared classes of `services.common.errors`, so the one table in
`services.common.status` maps them to gRPC status codes, and the built-in
families (ValueError, LookupError) that the command line turns into one line.
"""

from __future__ import annotations

from services.common.errors import FailedPrecondition, InvalidInput, ModelNotFound


class InvalidRequest(InvalidInput):
    """A request or option that cannot be answered as asked (INVALID_ARGUMENT)."""


class ExperimentNotFound(ModelNotFound):
    """No experiment of that name in the run store (NOT_FOUND)."""


class RunNotFound(ModelNotFound):
    """No run of that id in the experiment (NOT_FOUND)."""


class NoRuns(ModelNotFound):
    """The selection left no run to compare (NOT_FOUND)."""


class MalformedRunError(FailedPrecondition, ValueError):
    """A run folder that breaks the run-store format; the message says how.

    A scan lists such runs as skipped; asking for one by id answers FAILED_PRECONDITION.
    """
