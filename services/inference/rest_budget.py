"""What a REST request costs in memory, and the budget that bounds it per server and per client.

A REST request costs more than its bytes: parsed, each JSON number becomes a Python
object of about 32 bytes and each `{}` a dict of 64, so 16 MB of JSON can cost 400 MB.
`JsonCost` gives an upper bound of what parsing and converting JSON bytes will take,
counted from the bytes themselves (C-speed `bytes.count`) as they arrive, before
anything is parsed. `MemoryBudget` holds every request's reservations: the bytes of its body as
they arrive, the cost of its JSON, its answer while it is sent. Past the budget, a
request is refused (429) instead of taking the server past its memory; one client
address may hold at most its share, so that a few bodies withheld by one client
cannot refuse everyone else.
"""

from __future__ import annotations

import threading

from services.common.errors import ResourceExhausted

# Per JSON value: its slot in a list or dict (8, and the list's spare room), its object
# (a float 24 and an int 28 bytes, rounded to 32 by the allocator), and its share of the
# conversion to an array (a flat list of references and the array's element).
VALUE = 56
CONTAINER = 64  # a list's or dict's own object, beyond its slot
QUOTE = 29  # half a string object's fixed part (49 bytes, rounded up), per quote
NARROW = 2  # per byte of ASCII: the decoded text, and the strings' characters
WIDE = 9  # per byte once the text is not ASCII: four bytes a character for both, and the
# decoder's narrower first try


class JsonCost:
    """An upper bound of the bytes that parsing a JSON document and converting its values to
    arrays will hold beyond the document itself, counted part by part as it arrives.

    Every value is preceded by `[`, `,` or `:` or is itself a `{` or `[`, so those
    characters bound the number of values (commas inside strings only add to the bound).
    The text decoded from UTF-8, and the strings in it, take a byte per byte while the
    document is ASCII; once a part is not, four (Python keeps a string with one character
    above U+FFFF at four bytes per character, the whole document's text included), for
    the parts before it too.
    """

    def __init__(self) -> None:
        self.seen = 0  # bytes of the document so far
        self.wide = False  # a part was not ASCII

    def add(self, part: bytes | bytearray) -> int:
        """The cost of `part`, the next bytes of the document."""
        containers = part.count(b"[") + part.count(b"{")
        values = containers + part.count(b",") + part.count(b":")
        cost = VALUE * values + CONTAINER * containers + QUOTE * part.count(b'"')
        if not self.wide and not part.isascii():
            self.wide = True
            cost += (WIDE - NARROW) * self.seen
        cost += (WIDE if self.wide else NARROW) * len(part)
        self.seen += len(part)
        return cost


def json_cost(data: bytes | bytearray) -> int:
    """JsonCost of a whole document."""
    return JsonCost().add(data)


class TooCostly(ResourceExhausted):
    """A request that costs more than one client may ever hold (HTTP 413, not 429: trying
    again cannot help)."""


class MemoryBudget:
    """Bytes held by requests, in all and per client address; thread-safe."""

    def __init__(self, total: int, per_peer: int) -> None:
        if total < 1 or not 1 <= per_peer <= total:
            raise ValueError(
                f"a memory budget needs 1 <= per-client share <= total, got {per_peer} of {total}"
            )
        self.total = total
        self.per_peer = per_peer
        self.held = 0
        self._peers: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, peer: str, size: int, own: int = 0) -> None:
        """Count `size` more bytes for a request of `peer` that holds `own` already, or
        raise: TooCostly when the request alone would pass the client's share, else
        ResourceExhausted when the budget or the client's share is taken now."""
        if own + size > self.per_peer:
            raise TooCostly(
                f"this request would hold about {_mb(own + size)} in memory (its body, and its "
                f"JSON once parsed), more than one client may hold ({_mb(self.per_peer)}, "
                "--http-memory-budget-mb-per-peer): send large tensors as binary data "
                "(parameter binary_data_size) or split the batch"
            )
        with self._lock:
            mine = self._peers.get(peer, 0)
            if self.held + size > self.total or mine + size > self.per_peer:
                whose = "this client's" if mine + size > self.per_peer else "the server's"
                raise ResourceExhausted(
                    f"too many request bytes are held at once ({whose} share of the REST memory "
                    "budget, --http-memory-budget-mb); try again later"
                )
            self.held += size
            self._peers[peer] = mine + size

    def force(self, peer: str, size: int) -> None:
        """Count `size` bytes that are held already (an answer being sent), past the budget
        if need be: the requests after it see them."""
        with self._lock:
            self.held += size
            self._peers[peer] = self._peers.get(peer, 0) + size

    def release(self, peer: str, size: int) -> None:
        with self._lock:
            self.held -= size
            left = self._peers.get(peer, 0) - size
            if left > 0:
                self._peers[peer] = left
            else:
                self._peers.pop(peer, None)

    def of(self, peer: str) -> int:
        with self._lock:
            return self._peers.get(peer, 0)


class Held:
    """One request's reservations in a MemoryBudget, released together by `release()`."""

    __slots__ = ("budget", "peer", "size")

    def __init__(self, budget: MemoryBudget, peer: str) -> None:
        self.budget = budget
        self.peer = peer
        self.size = 0

    def reserve(self, size: int) -> None:
        """Hold `size` more bytes, or raise (see MemoryBudget.reserve)."""
        if size > 0:
            self.budget.reserve(self.peer, size, self.size)
            self.size += size

    def force(self, size: int) -> None:
        if size > 0:
            self.budget.force(self.peer, size)
            self.size += size

    def release(self) -> None:
        if self.size:
            self.budget.release(self.peer, self.size)
            self.size = 0


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"
