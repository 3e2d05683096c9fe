"""Calls counted per protocol, method and outcome, for the metrics page.

Both front ends of a server (gRPC through its call gate, REST through its app)
record each call here: (protocol, method, outcome) -> calls and total seconds. The
keys are bounded by construction: methods are the server's own (unknown ones are
not recorded under their name), outcomes are status codes. Request parameters that the
server ignored as unknown are counted here too, by protocol and place.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class CallTotals:
    count: int = 0
    ns: int = 0


# More keys than any server here produces; a bug that made them unbounded stops here.
MAX_KEYS = 4096


class CallCounters:
    """Thread-safe totals of calls by (protocol, method, outcome)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str, str], CallTotals] = {}
        self._ignored: dict[tuple[str, str], int] = {}

    def record(self, protocol: str, method: str, outcome: str, ns: int) -> None:
        key = (protocol, method, outcome)
        with self._lock:
            totals = self._totals.get(key)
            if totals is None:
                if len(self._totals) >= MAX_KEYS:
                    return
                totals = self._totals[key] = CallTotals()
            totals.count += 1
            totals.ns += ns

    def snapshot(self) -> dict[tuple[str, str, str], CallTotals]:
        with self._lock:
            return {k: CallTotals(v.count, v.ns) for k, v in sorted(self._totals.items())}

    def add(self, protocol: str, where: str, count: int) -> None:
        """Count request parameters ignored as unknown, by protocol and place ("request",
        "input", "output"); the keys themselves are never recorded (clients choose them)."""
        key = (protocol, where)
        with self._lock:
            if key in self._ignored or len(self._ignored) < MAX_KEYS:
                self._ignored[key] = self._ignored.get(key, 0) + count

    def ignored_parameters(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(sorted(self._ignored.items()))
