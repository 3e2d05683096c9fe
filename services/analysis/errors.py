"""Domain errors of the analysis service.

They subclass the shared classes of `services.common.errors`, so the one table in
`services.common.status` maps them to gRPC status codes, and the built-in
families (ValueError, LookupError) that the command line turns into one line. The
run store's own errors (runstore.errors: a bad name, a malformed run, an experiment
or run not found) are added to that table by the servicer.
"""

from __future__ import annotations

from services.common.errors import InvalidInput, ModelNotFound


class InvalidRequest(InvalidInput):
    """A request or option that cannot be answered as asked (INVALID_ARGUMENT)."""


class NoRuns(ModelNotFound):
    """The selection left no run to compare (NOT_FOUND)."""
