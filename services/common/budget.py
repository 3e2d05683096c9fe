"""The memory gRPC requests may hold once admitted, per server and per client address.

A gRPC request's size is unknown until it has been read: grpc.aio hands a handler whole
messages only, and once a read is pending gRPC's flow control lets the client send a
message as large as the server's limit. So a read is counted, before it is posted, at
the most it can take in (`size`: the largest message the server accepts); once the
message is in, the call holds what its request really costs (`settle`: the message
times its method's cost factor, the parsed message and what the handler derives from
it) until it ends. A call whose read does not fit waits its turn (first come, first
served, except that a client whose own share is full does not hold up the others) for
at most its receive deadline; a request that alone costs more than one client may hold
is refused at once. Request streams (ModelStreamInfer, reflection) hold a read's worth
for as long as they are open, since a stream's read may be pending for minutes; they
may hold at most half of the budget, so that idle streams never starve unary calls,
and a stream that does not fit is refused when it opens.

Used from the server's event loop only (no lock).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

from services.common.errors import DeadlineExceeded, ResourceExhausted

FLAG = "--grpc-memory-budget-mb"
PEER_FLAG = "--grpc-memory-budget-mb-per-peer"


class TooCostly(ResourceExhausted):
    """A request that costs more than one client may ever hold: trying again cannot help."""


@dataclass
class _Waiter:
    peer: str
    size: int
    future: asyncio.Future[None]


@dataclass
class Hold:
    """One call's bytes in a `ReadBudget`; `release()` gives them all back (idempotent)."""

    budget: ReadBudget
    peer: str
    size: int = 0
    stream: int = 0  # of `size`, what counts against the streams' half
    released: bool = field(default=False, repr=False)

    def settle(self, size: int) -> None:
        """Hold `size` bytes from now on (what the call's request costs once read): fewer
        are given back at once; more are taken if they fit now, else ResourceExhausted
        (TooCostly when they never could) and the hold is unchanged."""
        if size <= self.size:
            self.budget._give(self.peer, self.size - size)
            self.size = size
            return
        more = size - self.size
        self.budget._check_share(size, "this request")
        if not self.budget._fits(self.peer, more):
            raise ResourceExhausted(
                f"this request would hold {_mb(size)} once read (its message and what it "
                f"parses into), more than is free of the gRPC memory budget now ({FLAG}); "
                "try again later"
            )
        self.budget._take(self.peer, more)
        self.size = size

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.budget._give(self.peer, self.size)
            self.budget.streams -= self.stream
            self.size = self.stream = 0


class ReadBudget:
    """Bytes held by admitted requests, in all and per client address."""

    def __init__(self, total: int, per_peer: int) -> None:
        if total < 1 or not 1 <= per_peer <= total:
            raise ValueError(
                f"a memory budget needs 1 <= per-client share <= total, got {per_peer} of "
                f"{total} bytes ({FLAG}, {PEER_FLAG})"
            )
        self.total = total
        self.per_peer = per_peer
        self.held = 0
        self.peak = 0
        self.streams = 0  # bytes held by request streams, at most half of `total`
        self.waited = 0  # reads that had to wait for room
        self.refused = 0
        self._peers: collections.Counter[str] = collections.Counter()
        self._waiters: collections.deque[_Waiter] = collections.deque()

    # Reads of unary requests ------------------------------------------------------------

    async def reserve(self, peer: str, size: int, timeout: float) -> Hold:
        """Hold `size` bytes for a read of `peer`, waiting up to `timeout` seconds for room
        (DeadlineExceeded past it); TooCostly when it could never fit."""
        self._check_share(size, "reading this request")
        hold = Hold(self, peer)
        waiter = _Waiter(peer, size, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._wake()
        if waiter.future.done():
            hold.size = size
            return hold
        self.waited += 1
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(waiter.future)
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if waiter.future.done():
                self._give(peer, size)  # granted in the turn it timed out or was cancelled
            else:
                waiter.future.cancel()
            if isinstance(exc, TimeoutError):
                self.refused += 1
                raise DeadlineExceeded(
                    f"no room to read this request within {timeout:g} s: the gRPC memory "
                    f"budget ({FLAG}, {_mb(self.total)}; {_mb(self.per_peer)} per client) is "
                    "held by requests being read or served; try again later"
                ) from None
            raise
        hold.size = size
        return hold

    # Request streams ----------------------------------------------------------------------

    def open_stream(self, peer: str, size: int) -> Hold:
        """Hold `size` bytes for a request stream's reads, for as long as it is open;
        ResourceExhausted at once when they do not fit (streams hold at most half)."""
        self._check_share(size, "a request stream")
        if self.streams + size > self.total // 2 or not self._fits(peer, size):
            self.refused += 1
            raise ResourceExhausted(
                f"no room for another request stream: each holds {_mb(size)} (the largest "
                f"message) of the gRPC memory budget ({FLAG}, {_mb(self.total)}; streams "
                f"at most half, {_mb(self.per_peer)} per client); close one or try again later"
            )
        self._take(peer, size)
        self.streams += size
        return Hold(self, peer, size, stream=size)

    # Bookkeeping ---------------------------------------------------------------------------

    def of(self, peer: str) -> int:
        return self._peers.get(peer, 0)

    def _check_share(self, size: int, what: str) -> None:
        if size > self.per_peer:
            self.refused += 1
            raise TooCostly(
                f"{what} would hold {_mb(size)} in memory, more than one client may hold "
                f"({_mb(self.per_peer)}, {PEER_FLAG}): send smaller batches, or raise the "
                "budget or lower --max-message-mb"
            )

    def _fits(self, peer: str, size: int) -> bool:
        return self.held + size <= self.total and self._peers[peer] + size <= self.per_peer

    def _take(self, peer: str, size: int) -> None:
        self.held += size
        self._peers[peer] += size
        self.peak = max(self.peak, self.held)

    def _give(self, peer: str, size: int) -> None:
        if size <= 0:
            return
        self.held -= size
        left = self._peers[peer] - size
        if left > 0:
            self._peers[peer] = left
        else:
            del self._peers[peer]
        self._wake()

    def _wake(self) -> None:
        """Grant waiting reads in order while they fit; one whose client's share is full is
        passed over (it keeps its place), one that does not fit the total stops the round."""
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            if self.held + waiter.size > self.total:
                break
            if self._peers[waiter.peer] + waiter.size > self.per_peer:
                continue
            self._waiters.remove(waiter)
            self._take(waiter.peer, waiter.size)
            waiter.future.set_result(None)


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
