"""How much memory parsed runs take, and a budget that bounds it.

A server that reads a run store keeps parsed runs in memory (its cache, and the runs
each call is working on). What a run costs there is not its size on disk: a metrics
line of 1 kB becomes about 3 kB of Python objects, and a JSON file of empty objects
about 25 times its size. So the reader counts what it builds:

- before `json.loads`, an upper bound of what parsing those bytes can allocate
  (`json_bound`: every value token at its largest Python object, every character at
  four bytes), held only while the parse runs;
- after it, what the records it keeps take (`epoch_size`, `json_size`), held for as
  long as the parsed run is alive anywhere in the process: a `weakref.finalize` gives
  it back when the last reference goes, whether the cache or a call held it.

`MemoryBudget` is that count against a limit. It never blocks: a reservation that
does not fit fails at once, and the reader turns that into a clear error.

`ClientShares` keeps one client from taking the whole budget: while a server's call
runs inside `shares.client(key)`, what its parses reserve also counts against that
client's share (by default half the budget), for as long as the client has calls in
flight.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

# An upper bound on what one JSON value token costs once parsed: an empty dict (64
# bytes) plus its slot in a list or dict that may be over-allocated.
_TOKEN_BYTES = 100
# A character of JSON text as a Python str: up to 4 bytes (a string holding one
# character outside the BMP stores every character in 4 bytes).
_CHAR_BYTES = 4


def json_bound(data: bytes) -> int:
    """An upper bound on the bytes `json.loads(data)` allocates.

    Every value other than the first in a container follows a comma and every first
    one an opening bracket or brace, and every key a colon, so these four bytes count
    the objects parsing can make (commas inside strings only make the bound larger).
    """
    tokens = 1 + data.count(b",") + data.count(b"[") + data.count(b"{") + data.count(b":")
    return _CHAR_BYTES * len(data) + _TOKEN_BYTES * tokens


def json_size(value: Any) -> int:
    """The bytes a parsed JSON value takes: its containers, strings and numbers. Objects
    json.loads shares (repeated keys, small integers) count at every use, so this may be
    more, never less. The walk holds one iterator per level of nesting, nothing more."""
    total = sys.getsizeof(value)
    stack = [_children(value)]
    while stack:
        for item in stack[-1]:
            total += sys.getsizeof(item)
            if isinstance(item, dict | list | tuple):
                stack.append(_children(item))
                break
        else:
            stack.pop()
    return total


def _children(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        return itertools.chain(value.keys(), value.values())
    if isinstance(value, list | tuple):
        return iter(value)
    return iter(())


class MemoryBudget:
    """Bytes of parsed runs alive in this process, against a limit (None: no limit)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit <= 0:
            raise ValueError(f"memory budget must be positive, got {limit} bytes")
        self.limit = limit
        self._used = 0
        # Re-entrant: a run freed by the garbage collector while this lock is held gives
        # its bytes back through `release` on the same thread.
        self._lock = threading.RLock()

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        return self._used

    def try_reserve(self, nbytes: int) -> bool:
        """Reserve `nbytes` if they fit under the limit; False (nothing reserved) if not."""
        with self._lock:
            if self.limit is not None and self._used + nbytes > self.limit:
                return False
            self._used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        """Give back bytes reserved earlier."""
        with self._lock:
            self._used -= nbytes

    def hold_for(self, owner: object, nbytes: int) -> None:
        """Keep `nbytes` reserved (already reserved by the caller) until `owner` is freed."""
        weakref.finalize(owner, self.release, nbytes)


class ClientShares:
    """What each client's calls in flight have parsed, against a share of the budget."""

    def __init__(self, share: int | None) -> None:
        self.share = share
        self._used: Counter[str] = Counter()
        # Re-entrant: a run freed while it is held gives its part back on the same thread.
        self._lock = threading.RLock()

    def used(self, key: str) -> int:
        """Bytes the client's calls in flight hold now."""
        return self._used[key]

    @contextlib.contextmanager
    def client(self, key: str) -> Iterator[None]:
        """Count the parses of the code inside against client `key`'s share, until it ends."""
        tally = Tally(self, key)
        token = _CLIENT.set(tally)
        try:
            yield
        finally:
            _CLIENT.reset(token)
            tally.close()


class Tally:
    """One call's part of its client's share. A parsed run's part goes back when the run
    is freed, when the call lets go of it (`let_go`: the cache may keep it, but the call
    no longer holds it), or when the call ends, whichever comes first."""

    def __init__(self, shares: ClientShares, key: str) -> None:
        self.shares, self.key = shares, key
        self.held = 0
        self._parts: dict[int, int] = {}  # id of a parsed run -> its part of `held`

    @property
    def share(self) -> int | None:
        return self.shares.share

    def try_add(self, nbytes: int) -> bool:
        shares = self.shares
        with shares._lock:
            if shares.share is not None and shares._used[self.key] + nbytes > shares.share:
                return False
            shares._used[self.key] += nbytes
            self.held += nbytes
            return True

    def sub(self, nbytes: int) -> None:
        shares = self.shares
        with shares._lock:
            nbytes = min(nbytes, self.held)
            self.held -= nbytes
            shares._used[self.key] -= nbytes
            if shares._used[self.key] <= 0:
                del shares._used[self.key]

    def hold_for(self, owner: object, nbytes: int) -> None:
        """`nbytes` of `held` are `owner`'s: given back when it is freed or let go of."""
        key = id(owner)
        with self.shares._lock:
            self._parts[key] = self._parts.get(key, 0) + nbytes
        weakref.finalize(owner, self._drop, key)

    def let_go(self, owner: object) -> None:
        """The call holds `owner` no more (one run at a time through a listing)."""
        self._drop(id(owner))

    def _drop(self, key: int) -> None:
        with self.shares._lock:
            nbytes = self._parts.pop(key, 0)
        self.sub(nbytes)

    def close(self) -> None:
        with self.shares._lock:
            self._parts.clear()
        self.sub(self.held)


_CLIENT: contextvars.ContextVar[Tally | None] = contextvars.ContextVar(
    "runstore_client", default=None
)


def current_tally() -> Tally | None:
    """The tally of the call running in this context (None outside `ClientShares.client`)."""
    return _CLIENT.get()


def mib(nbytes: float) -> str:
    """Bytes as MiB for messages: `12.3 MiB`."""
    return f"{nbytes / 2**20:.1f} MiB"
