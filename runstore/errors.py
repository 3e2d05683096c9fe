"""Errors of the run store. Plain Python families (ValueError, LookupError), so the
command line prints them as one line and a server maps them in its own table."""

from __future__ import annotations


class BadName(ValueError):
    """An experiment or run name that could leave its folder or break the layout."""


class MalformedRun(ValueError):
    """A run folder that breaks the format (docs/formats.md); the message says how."""


class ExperimentNotFound(LookupError):
    """No experiment of that name in the store."""


class RunNotFound(LookupError):
    """No run of that id in the experiment."""


class RunTooLarge(MalformedRun):
    """A run whose parsed records would take more memory than the reader may use at all."""


class ReaderBusy(RuntimeError):
    """Parsed runs that calls in flight hold leave no room for another now; try later."""
