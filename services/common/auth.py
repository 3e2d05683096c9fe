"""Which `authorization` a call carries, and whether it proves the bearer token.

One rule for every front end (gRPC metadata, REST headers): a call proves the token
when it carries exactly one `authorization` value and that value is
`Bearer <token>` (compared in constant time). None is "missing"; more than one is
refused as ambiguous, whatever they say, because proxies and libraries disagree on
which of several headers counts (the first, the last, or all joined by commas), and
a server that picks one can be told something its proxy never checked.

Grpc-free, so that the REST front end and tests use it without a gRPC import.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

AUTHORIZATION = "authorization"


def authorization_values(pairs: Iterable[tuple[Any, Any]] | None) -> list[bytes]:
    """Every `authorization` value among (key, value) pairs (gRPC metadata or HTTP headers;
    keys compared without regard to case), as bytes."""
    found = []
    for key, value in pairs or ():
        name = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if name.lower() == AUTHORIZATION:
            found.append(value if isinstance(value, bytes) else str(value).encode("utf-8"))
    return found


class BearerToken:
    """The server's token, and the check every protected call passes."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ValueError("auth token is empty: give a non-empty token or none")
        self._expected = f"Bearer {token}".encode()

    def refusal(self, values: list[bytes]) -> str | None:
        """Why a call with these `authorization` values is refused; None when it may go on."""
        if len(values) == 1 and hmac.compare_digest(values[0], self._expected):
            return None
        if not values:
            reason = "missing bearer token"
        elif len(values) > 1:
            reason = f"{len(values)} authorization values (send exactly one)"
        else:
            reason = "invalid bearer token"
        return f"{reason}: send 'authorization: Bearer <token>'"

    def allows(self, pairs: Iterable[tuple[Any, Any]] | None) -> bool:
        """Whether metadata or headers given as (key, value) pairs prove the token."""
        return self.refusal(authorization_values(pairs)) is None
