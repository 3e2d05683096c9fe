"""What the analysis service adds to the run-store reader (`runstore`): choosing runs
by status and by config values. Reading, parsing, caching and names are the run
store's own (runstore.reader), shared with training."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from runstore import STATUSES, Run
from services.analysis.errors import InvalidRequest


def select_runs(
    runs: Iterable[Run], *, statuses: Iterable[str] = (), where: Iterable[str] = ()
) -> list[Run]:
    """Runs whose status is in `statuses` (all when empty) and that match every KEY=VALUE."""
    matches = run_matcher(statuses=statuses, where=where)
    return [r for r in runs if matches(r)]


def run_matcher(
    *, statuses: Iterable[str] = (), where: Iterable[str] = ()
) -> Callable[[Run], bool]:
    """`select_runs`' test for one run (InvalidRequest up front for a bad status or
    filter), for callers that look at runs one at a time."""
    wanted = set(statuses)
    unknown = wanted - set(STATUSES)
    if unknown:
        raise InvalidRequest(
            f"unknown status {sorted(unknown)[0]!r}; allowed: {', '.join(STATUSES)}"
        )
    filters = [parse_filter(f) for f in where]

    def matches(run: Run) -> bool:
        return (not wanted or run.status in wanted) and all(run.label(k) == v for k, v in filters)

    return matches


def parse_filter(text: str) -> tuple[str, str]:
    """Split `key=value` (a dotted config key); InvalidRequest when it is not of that form."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidRequest(f"filter {text!r} is not KEY=VALUE (e.g. optimizer.name=adam)")
    return key.strip(), value.strip()
