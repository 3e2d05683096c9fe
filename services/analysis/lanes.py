"""Lanes: a bounded queue in front of each kind of expensive analysis call.

A figure takes seconds to draw (longer at large sizes with many groups), and large
comparisons take seconds to compute. Without a bound,
slow calls take every handler thread while they wait their turn, cheap calls
(ListExperiments, health) find none, and work goes on for clients that left long ago.
So each kind of expensive call runs in a `Lane`:

- at most `workers` calls run at once; at most `queue` more wait, in arrival order,
  each holding its handler thread while it waits; the next one is refused at once with
  RESOURCE_EXHAUSTED, so slow calls never hold more threads than their lanes have
  places and cheap calls always find one;
- one client (the peer's address, without its port) holds at most half of a lane's
  places, so a single client cannot take a lane from everyone else;
- a waiting call leaves the queue the moment its client cancels or its deadline passes
  (`context.add_callback` wakes it), and a running one stops at its next step
  (`check`, called between steps and between the panels of a figure);
- `close()` (shutdown) refuses the waiting calls at once with UNAVAILABLE; the running
  ones get the server's grace period, after which gRPC cancels them and they stop at
  their next step.

Only the standard `grpc.ServicerContext` API is used (`is_active`, `time_remaining`,
`add_callback`, `peer`), so a lane works under any server that provides it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from services.common.errors import Cancelled, DeadlineExceeded, NotReady, ResourceExhausted

T = TypeVar("T")
# A waiting call also looks at its context this often, in case a server does not run
# the callbacks that would wake it.
RECHECK_SECONDS = 0.5


@dataclass(frozen=True)
class CallLimits:
    """How many expensive calls run and wait (the `serve-analysis` options)."""

    render_queue: int = 8  # RenderComparison calls waiting behind the one being drawn
    analysis_workers: int = 2  # comparison calls computed at once
    analysis_queue: int = 16  # comparison calls waiting for a worker

    def __post_init__(self) -> None:
        for name, value, least in (
            ("max queued renders", self.render_queue, 0),
            ("analysis workers", self.analysis_workers, 1),
            ("max queued analyses", self.analysis_queue, 0),
        ):
            if value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")


class _Ticket:
    """One call in a lane: whose it is, and when it started and its client left."""

    __slots__ = ("gone_at", "peer", "started_at")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.started_at: float | None = None
        self.gone_at: float | None = None


def peer_key(context: Any) -> str:
    """The client's address without its port (`ipv4:10.0.0.7`): one key per client host,
    not per connection, so that opening more connections does not buy more places."""
    try:
        peer = str(context.peer())
    except Exception:  # a context without a peer: one shared key
        return "unknown"
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in address:
        address = address.rsplit(":", 1)[0]
    return f"{kind}:{address}"


def check_call(context: Any) -> None:
    """Raise Cancelled when the call's client has gone, DeadlineExceeded when its
    deadline has passed: its work would be thrown away."""
    if not context.is_active():
        raise Cancelled("the call ended (cancelled by its client or the server) before its work")
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded("the call's deadline passed before its work was done")


class Lane:
    """A bounded queue in front of `workers` concurrent calls of one kind."""

    def __init__(self, name: str, *, workers: int, queue: int, flag: str) -> None:
        if workers < 1 or queue < 0:
            raise ValueError(f"lane {name}: workers must be >= 1 and queue >= 0")
        self.name = name
        self.workers = workers
        self.queue = queue
        self.flag = flag  # the option that sets `queue`, for messages
        self.per_peer = max(1, (workers + queue + 1) // 2)
        self._cond = threading.Condition()
        self._waiting: deque[_Ticket] = deque()
        self._running: set[_Ticket] = set()
        self._by_peer: Counter[str] = Counter()
        self._closed = False

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def stalled(self, after: float) -> float:
        """Seconds the longest-running call has gone on after its client left, when over
        `after` (0.0 otherwise): work that does not stop when it should."""
        now = time.monotonic()
        with self._cond:
            late = [now - t.gone_at for t in self._running if t.gone_at is not None]
        worst = max(late, default=0.0)
        return worst if worst > after else 0.0

    def close(self) -> None:
        """Refuse new calls and the waiting ones (UNAVAILABLE); running ones go on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call runs (True) or `timeout` seconds pass (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout)

    # ------------------------------------------------------------------ a call

    def run(self, context: Any, work: Callable[[Callable[[], None]], T]) -> T:
        """Run `work(check)` when the call's turn comes; `check()` raises once the call's
        client has gone or its deadline has passed (call it between steps)."""
        ticket = self._admit(context)
        try:
            self._wait_turn(ticket, context)

            def check() -> None:
                check_call(context)

            check()
            return work(check)
        finally:
            self._leave(ticket)

    def _admit(self, context: Any) -> _Ticket:
        check_call(context)
        ticket = _Ticket(peer_key(context))
        with self._cond:
            if self._closed:
                raise NotReady(self._closing())
            held = self._by_peer[ticket.peer]
            if held >= self.per_peer:
                raise ResourceExhausted(
                    f"this client has {held} {self.name} calls running or waiting, the most "
                    f"one client may (half of the lane's {self.workers + self.queue} places, "
                    f"{self.flag}): wait for an answer before sending more"
                )
            if len(self._running) + len(self._waiting) >= self.workers + self.queue:
                raise ResourceExhausted(
                    f"{len(self._running)} {self.name} calls are running and "
                    f"{len(self._waiting)} waiting, the most this server holds ({self.flag} "
                    f"{self.queue}): try again later"
                )
            self._by_peer[ticket.peer] += 1
            self._waiting.append(ticket)

        def ended() -> None:  # gRPC: the call is over (answered, cancelled or timed out)
            with self._cond:
                if ticket.gone_at is None:
                    ticket.gone_at = time.monotonic()
                self._cond.notify_all()

        add_callback = getattr(context, "add_callback", None)
        if add_callback is not None and not add_callback(ended):
            ended()  # over already
        return ticket

    def _wait_turn(self, ticket: _Ticket, context: Any) -> None:
        with self._cond:
            while True:
                if self._closed:
                    raise NotReady(self._closing())
                if ticket.gone_at is not None or not context.is_active():
                    raise Cancelled(f"the call ended while it waited for its {self.name} turn")
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    ahead = self._waiting.index(ticket)
                    raise DeadlineExceeded(
                        f"the call's deadline passed while it waited for its {self.name} "
                        f"turn ({len(self._running)} running, {ahead} ahead of it)"
                    )
                if self._waiting[0] is ticket and len(self._running) < self.workers:
                    self._waiting.popleft()
                    self._running.add(ticket)
                    ticket.started_at = time.monotonic()
                    self._cond.notify_all()  # the next one may have a free worker too
                    return
                wait = RECHECK_SECONDS if remaining is None else min(RECHECK_SECONDS, remaining)
                self._cond.wait(wait)

    def _leave(self, ticket: _Ticket) -> None:
        with self._cond:
            if ticket.started_at is not None:
                self._running.discard(ticket)
            else:
                with contextlib.suppress(ValueError):  # refused before it queued
                    self._waiting.remove(ticket)
            self._by_peer[ticket.peer] -= 1
            if self._by_peer[ticket.peer] <= 0:
                del self._by_peer[ticket.peer]
            self._cond.notify_all()

    def _closing(self) -> str:
        return (
            f"the server is shutting down and takes no more {self.name} calls: "
            "send it to another replica or try again when this one is back"
        )
