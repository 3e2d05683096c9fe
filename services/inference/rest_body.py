"""Reading a REST request: its headers, and its body counted in the memory budget as it
arrives (services.inference.rest_budget), with what its JSON will cost once parsed.

A body holds what has arrived, not what its Content-Length declares: a client that
declares 64 MB and sends nothing holds nothing. A compressed body is inflated a step at
a time, each step counted, so that a small gzip bomb is refused before it inflates.
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.requests import Request

from services.common.errors import InvalidInput
from services.inference.rest_budget import Held, JsonCost

# The JSON part of a request: parsed, each number becomes a Python object of 24 to 32
# bytes; larger tensors go as binary data.
MAX_JSON_BYTES = 16 * 1024 * 1024
INFLATE_STEP = 1 << 20  # bytes a compressed body is inflated by at a time (each counted)
ENCODINGS = ("identity", "gzip", "deflate")


class Reply(Exception):
    """An answer decided before the core was called (404, 405, 413, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def headers(request: Request) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name, the first of a repeated one; made once."""
    scope = request.scope
    found: dict[bytes, bytes] | None = scope.get("stride.headers")
    if found is None:
        found = scope["stride.headers"] = {}
        for name, value in scope["headers"]:
            found.setdefault(name, value)
    return found


def header(request: Request, name: bytes) -> str:
    """One header's value ("" when absent)."""
    return headers(request).get(name, b"").decode("latin-1")


def encoding(request: Request) -> str:
    return header(request, b"content-encoding").lower() or "identity"


def check_json_size(size: int) -> None:
    if size > MAX_JSON_BYTES:
        raise Reply(
            413,
            f"the JSON part of the request is {size} bytes, more than {MAX_JSON_BYTES}: send "
            "large tensors as binary data (parameter binary_data_size)",
        )


async def read_body(
    request: Request, held: Held, *, max_bytes: int, timeout: float, json_part: int | None = None
) -> tuple[bytearray, int]:
    """The request body as it arrived (compressed or not), its bytes counted in `held` as
    they come, together with what the first `json_part` bytes (all of them when None)
    will cost once parsed; returns the body and that cost (0 for a compressed body: it is
    counted as it is inflated). 413 past `max_bytes` or the JSON limit, 429 past the
    memory budget, 408 past `timeout` seconds, 415 for an unknown encoding."""
    declared = header(request, b"content-length")
    size = int(declared) if declared.isdigit() else 0
    if size > max_bytes:
        raise Reply(413, f"request body of {size} bytes exceeds {max_bytes} (--max-message-mb)")
    coding = encoding(request)
    if coding not in ENCODINGS:
        raise Reply(415, f"unsupported Content-Encoding {coding!r}; use gzip, deflate or none")
    json_left = 0
    if coding == "identity":
        json_left = max_bytes + 1 if json_part is None else json_part
    json_cost = JsonCost()
    body = bytearray()
    parsed = 0
    receive = request.receive
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise Reply(400, "the client closed the connection mid-request")
                chunk = message.get("body", b"")
                if len(body) + len(chunk) > max_bytes:
                    raise Reply(413, f"request body exceeds {max_bytes} bytes (--max-message-mb)")
                cost = 0
                if json_left > 0:
                    part = chunk[:json_left]
                    json_left -= len(part)
                    check_json_size(len(body) + len(part))
                    cost = json_cost.add(part)
                    parsed += cost
                held.reserve(len(chunk) + cost)
                body += chunk
                if not message.get("more_body", False):
                    return body, parsed
    except TimeoutError:
        raise Reply(
            408,
            f"the request body did not arrive within {timeout:g} s ({len(body)} of "
            f"{size or 'unknown'} bytes; --http-body-timeout)",
        ) from None


def plain(
    body: bytearray, coding: str, held: Held, *, max_bytes: int, json_part: int | None = None
) -> bytearray:
    """`body` inflated (as it is when not compressed), INFLATE_STEP bytes at a time, each
    counted in `held` with what the first `json_part` bytes (all when None) will cost
    parsed; 413 past `max_bytes`."""
    if coding == "identity":
        if json_part is None:
            check_json_size(len(body))
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}[coding]
    inflater = zlib.decompressobj(wbits)
    json_left = max_bytes + 1 if json_part is None else json_part
    json_cost = JsonCost()
    out, pending = bytearray(), bytes(body)
    del body
    while True:
        try:
            piece = inflater.decompress(pending, INFLATE_STEP)
        except zlib.error as exc:
            raise InvalidInput(f"the body is not valid {coding}: {exc}") from None
        pending = inflater.unconsumed_tail
        if len(out) + len(piece) > max_bytes:
            raise Reply(413, f"the decompressed body exceeds {max_bytes} bytes (--max-message-mb)")
        cost = len(piece)
        if json_left > 0:
            part = piece[:json_left]
            json_left -= len(part)
            check_json_size(len(out) + len(part))
            cost += json_cost.add(part)
        held.reserve(cost)
        out += piece
        if not piece and not pending:
            return out
