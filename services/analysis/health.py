"""What the analysis server's health says: whether it can do its work, not only that
its process answers.

Two threads watch the two things that can go wrong below a health check that answers:

- the run store: a listing of its top folder every `period` seconds, on a thread of
  its own (a hung network file system blocks that thread, not the judge). NOT_SERVING
  when the listing fails, or has not come back for `stale` seconds;
- the lanes (services.analysis.lanes): NOT_SERVING while a call has gone on for more
  than `stall` seconds after its client left, i.e. work that no longer stops when it
  should and holds the lane from everyone else.

A full queue is not trouble: cheap calls still answer and the refused ones say why.
The judge reports every change (`report(serving, reason)`) and logs it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from runstore import RunStore
from services.analysis.lanes import Lane

log = logging.getLogger("stride.analysis.health")

PERIOD_SECONDS = 2.0
STALE_SECONDS = 10.0
STALL_SECONDS = 30.0


class HealthMonitor:
    """Judges the service's health every `period` seconds and reports each change."""

    def __init__(
        self,
        store: RunStore,
        lanes: Sequence[Lane],
        report: Callable[[bool, str], None],
        *,
        period: float = PERIOD_SECONDS,
        stale: float = STALE_SECONDS,
        stall: float = STALL_SECONDS,
    ) -> None:
        self.store = store
        self.lanes = list(lanes)
        self.report = report
        self.period, self.stale, self.stall = period, stale, stall
        self.serving = True
        self.reason = ""
        self._listed_at = time.monotonic()  # the last listing that came back
        self._listing_error: str | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._list_store, name="analysis-health-store", daemon=True),
            threading.Thread(target=self._judge, name="analysis-health", daemon=True),
        ]

    def start(self) -> HealthMonitor:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def problems(self) -> list[str]:
        """What is wrong now, in words (empty when the service can do its work)."""
        found = []
        silent = time.monotonic() - self._listed_at
        if silent > self.stale:
            found.append(f"the run store has not answered a listing for {silent:.0f} s")
        elif self._listing_error is not None:
            found.append(f"the run store cannot be listed: {self._listing_error}")
        for lane in self.lanes:
            late = lane.stalled(self.stall)
            if late:
                found.append(f"a {lane.name} call has gone on {late:.0f} s after its client left")
        return found

    def _list_store(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.experiments()
                self._listing_error = None
            except OSError as exc:
                self._listing_error = exc.strerror or type(exc).__name__
            self._listed_at = time.monotonic()
            self._stop.wait(self.period)

    def _judge(self) -> None:
        while not self._stop.wait(self.period):
            problems = self.problems()
            serving = not problems
            reason = "; ".join(problems)
            if serving != self.serving:
                if serving:
                    log.info("analysis service healthy again")
                else:
                    log.warning("analysis service NOT_SERVING: %s", reason)
                self.serving, self.reason = serving, reason
                self.report(serving, reason)
