"""Counted slots for long calls (streams), per server and per peer.

A stream holds its slot for as long as it lasts; past the limit a new one is refused at
once with RESOURCE_EXHAUSTED, so idle streams can neither pile up nor take what other
calls need. With `per_peer`, one client address holds at most that many, so a single
peer cannot take every slot. Used from the server's event loop only (no lock).
"""

from __future__ import annotations

from collections import Counter

from services.common.errors import ResourceExhausted


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7")."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class Slots:
    """At most `limit` holders at once, at most `per_peer` of them from one address."""

    def __init__(self, limit: int, *, what: str, flag: str, per_peer: int | None = None) -> None:
        if limit < 1:
            raise ValueError(f"{what}: the limit must be at least 1, got {limit}")
        self.limit = limit
        self.per_peer = per_peer
        self.what = what
        self.flag = flag
        self.open = 0
        self.refused = 0
        self._by_peer: Counter[str] = Counter()

    def take(self, peer: str) -> str:
        """Hold a slot for `peer` (its key is returned, for `give`); ResourceExhausted if full."""
        key = peer_host(peer)
        if self.open >= self.limit:
            self.refused += 1
            raise ResourceExhausted(
                f"{self.limit} {self.what} are open already, the most this server allows "
                f"({self.flag}); close one or try again later"
            )
        if self.per_peer is not None and self._by_peer[key] >= self.per_peer:
            self.refused += 1
            raise ResourceExhausted(
                f"{self.per_peer} {self.what} are open already from this address, the most "
                f"one client may hold (a share of {self.flag}); close one or try again later"
            )
        self.open += 1
        self._by_peer[key] += 1
        return key

    def give(self, key: str) -> None:
        self.open -= 1
        self._by_peer[key] -= 1
        if self._by_peer[key] <= 0:
            del self._by_peer[key]
