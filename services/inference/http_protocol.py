"""uvicorn's httptools protocol, and the accepting of its connections, with the limits a
public port needs before a request is read.

Before a request is authenticated (the app checks the token as soon as its headers
are complete), a connection may hold only a small fixed number of bytes, and only for
a while. uvicorn (0.30 to 0.55) bounds none of this, and has no option for it:

- connections: any number, from anyone. Here `Acceptor` accepts them itself and counts
  them in `ConnectionLimits`, per server and per client address; past either limit a
  connection is closed at once (plain HTTP first gets a 503 saying why).
- TLS handshakes: the event loop gives each 60 s. Here `Acceptor` wraps each accepted
  socket (`loop.connect_accepted_socket`) with the header deadline as its handshake
  timeout; a handshaking connection is counted like any other.
- headers: httptools keeps every header line (and a header value grows without end
  until its line ends). Here the request line and headers of a request may take
  `MAX_HEADER_BYTES` and `MAX_HEADERS` fields; past that: 431 and closed.
- time: a connection must send each request's headers within `header_timeout` seconds
  of the connection or of the request's first byte (408 and closed, nginx's
  client_header_timeout); a request answered before its body was read must finish
  sending it within as long (its bytes are thrown away), else the connection is closed.
- answers: one the client does not read stays in the transport's buffer. Here an
  answer whose bytes have not moved for `header_timeout` seconds is dropped, with its
  connection.
- pipelining: uvicorn parses every request a read holds, queues those it cannot serve
  yet and reads on after each answer, so a client that sends requests and never reads
  the answers grows the queue without end. Here reading stays paused while requests
  wait, and a connection with more than `MAX_PIPELINED` waiting is closed.

`GuardedProtocol` overrides uvicorn's parser callbacks, and rest_server runs `Acceptor`
in place of uvicorn's own listening server, so pyproject pins uvicorn's range.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("stride.inference.http")

MAX_HEADER_BYTES = 16 * 1024  # request line and headers of one request (Node.js's default)
MAX_HEADERS = 100  # header fields of one request (Apache's LimitRequestFields)
MAX_PIPELINED = 8  # requests parsed and waiting behind the one being answered
LINGER_S = 1.0  # seconds a refused connection is read from (and what comes thrown away)


def _reply(status: str, message: str) -> bytes:
    text = message.encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
        f"content-length: {len(text)}\r\n\r\n"
    ).encode() + text


HEADERS_LATE = _reply("408 Request Timeout", "request headers did not arrive in time")
HEADERS_TOO_LARGE = _reply(
    "431 Request Header Fields Too Large",
    f"the request line and headers exceed {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} fields",
)
TOO_MANY = _reply("503 Service Unavailable", "too many connections from this address or in all")


class ConnectionLimits:
    """Open connections of one server, in all and per client address (the event loop's
    thread only)."""

    def __init__(self, total: int, per_peer: int) -> None:
        if total < 1 or not 1 <= per_peer <= total:
            raise ValueError(
                f"connection limits need 1 <= per address <= total, got {per_peer} and {total}"
            )
        self.total = total
        self.per_peer = per_peer
        self.open = 0
        self.refused = 0
        self._peers: dict[str, int] = {}

    def admit(self, peer: str) -> Slot | None:
        """A place for a new connection from `peer`, or None past either limit."""
        mine = self._peers.get(peer, 0)
        if self.open >= self.total or mine >= self.per_peer:
            self.refused += 1
            return None
        self.open += 1
        self._peers[peer] = mine + 1
        return Slot(self, peer)

    def _release(self, peer: str) -> None:
        self.open -= 1
        left = self._peers.get(peer, 0) - 1
        if left > 0:
            self._peers[peer] = left
        else:
            self._peers.pop(peer, None)


class Slot:
    """One connection's place in its ConnectionLimits, given back once."""

    __slots__ = ("limits", "peer")

    def __init__(self, limits: ConnectionLimits | None, peer: str) -> None:
        self.limits = limits
        self.peer = peer

    def release(self) -> None:
        if self.limits is not None:
            self.limits._release(self.peer)
            self.limits = None


class Acceptor:
    """Accepts connections on a listening socket for uvicorn's protocol, in place of the
    event loop's server: counted in `limits` from the moment they are accepted, refused
    past them, and over TLS with `handshake_timeout` seconds for the handshake.

    Has what uvicorn asks of a server when it stops: `close()` and `wait_closed()`.
    """

    def __init__(
        self,
        sock: socket.socket,
        make_protocol: Callable[[], GuardedProtocol],
        limits: ConnectionLimits,
        tls: ssl.SSLContext | None,
        handshake_timeout: float,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.limits = limits
        self._sock = sock
        self._make = make_protocol
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._opening: set[asyncio.Task[None]] = set()
        self._listening = False
        sock.setblocking(False)
        self._listen()

    def _listen(self) -> None:
        if not self._listening and self._sock.fileno() >= 0:
            self.loop.add_reader(self._sock.fileno(), self._accept)
            self._listening = True

    def _accept(self) -> None:
        for _ in range(64):  # at most this many per wake-up, so the loop serves the others too
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, most likely: wait, then go on
                log.warning("cannot accept HTTP connections for now: %s", exc)
                self.close()
                self.loop.call_later(0.1, self._listen)
                return
            slot = self.limits.admit(str(address[0]) if isinstance(address, tuple) else "")
            if slot is None:
                _refuse(conn, self._tls is None)
                continue
            with contextlib.suppress(OSError):  # uvicorn writes an answer's head and body apart
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self.loop.create_task(self._open(conn, slot))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open(self, conn: socket.socket, slot: Slot) -> None:
        def factory() -> GuardedProtocol:
            protocol = self._make()
            protocol.slot = slot  # given back when the connection is lost
            return protocol

        try:
            await self.loop.connect_accepted_socket(
                factory, conn, ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout if self._tls else None,
                ssl_shutdown_timeout=self._handshake_timeout if self._tls else None,
            )  # fmt: skip
        except BaseException as exc:  # a failed or timed-out handshake, or the server stops
            log.debug("HTTP connection from %s not opened: %r", slot.peer, exc)
            slot.release()
            with contextlib.suppress(OSError):
                conn.close()
            if isinstance(exc, asyncio.CancelledError):
                raise

    def close(self) -> None:
        """Stop accepting (the socket itself is its owner's to close)."""
        if self._listening:
            self._listening = False
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self._sock.fileno())

    async def wait_closed(self) -> None:
        for task in list(self._opening):
            task.cancel()


def _refuse(conn: socket.socket, plain: bool) -> None:
    with contextlib.suppress(OSError):
        if plain:
            conn.setblocking(False)
            conn.send(TOO_MANY)
        conn.close()


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a connection that broke a limit."""

    def __init__(self, reply: bytes) -> None:
        super().__init__()
        self.reply = reply


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header size and time limits and a bounded pipeline; made per
    server by `protocol_class`."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slot: Slot | None = None  # its place in the ConnectionLimits (set by Acceptor)
        self._timer: asyncio.TimerHandle | None = None
        self._in_headers = False  # a request has begun and its headers are not complete
        self._request_done = True  # the last request's body has been read (or thrown away)
        self._header_bytes = 0  # of the request whose headers are arriving
        self._messages = 0  # requests begun on this connection
        self._whole_chunk = False  # the chunk being parsed began inside a request's headers
        self._refused = False  # answered for good: what still comes is thrown away
        self._linger: asyncio.TimerHandle | None = None
        self._writes: asyncio.TimerHandle | None = None  # watches an answer not yet sent

    # The connection ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing is timed out as well

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        for timer in (self._linger, self._writes):
            if timer is not None:
                timer.cancel()
        if self.slot is not None:
            self.slot.release()
        super().connection_lost(exc)

    # Deadlines -----------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.header_timeout, self._late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A request is being answered, and reading is paused until it is: the next
            # request's headers get their time once the server reads again.
            self._arm()
            return
        draining = self.cycle is not None and not self._request_done  # answered already
        # An unread body not sent in time after its answer, or headers not in time.
        self._refuse(b"" if draining else HEADERS_LATE)

    def _check_writes(self, before: int) -> None:
        """An answer the client does not read stays in memory until it does: one that has
        not moved for the header time is dropped with its connection."""
        self._writes = None
        unsent = self.transport.get_write_buffer_size()
        if not unsent or self._refused:
            return
        if unsent >= before:
            self.transport.abort()
            return
        self._writes = self.loop.call_later(self.header_timeout, self._check_writes, unsent)

    # Parsing -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        # A chunk that arrives while a request's headers are arriving is all header bytes
        # until they end: counted whole, below, unless they end in it (then exactly).
        whole = self._whole_chunk = self._in_headers
        message = self._messages
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.reply)
            else:
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            return  # no upgrades (WebSocket, h2c) here: the request was answered as HTTP/1.1
        finally:
            self._whole_chunk = False
        if whole and self._in_headers and message == self._messages:
            self._header_bytes += len(data)  # the same request's headers, still not complete
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse(HEADERS_TOO_LARGE)

    def _refuse(self, reply: bytes) -> None:
        """Answer `reply` (unless a response is under way) and close: what the client still
        sends is thrown away for LINGER_S seconds (so that it can read the answer rather
        than a reset), then the connection is aborted."""
        self._refused = True
        self.pipeline.clear()
        self.flow.resume_reading()  # read, to throw away
        transport = self.transport
        if transport.is_closing():
            return
        if reply and (self.cycle is None or self.cycle.response_complete):
            transport.write(reply)
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()  # TLS: close_notify; the loop throws away what comes meanwhile
        self._linger = self.loop.call_later(LINGER_S, transport.abort)

    def _count(self, size: int) -> None:
        """Header bytes seen by a callback, in the chunk where the request began (its line
        may have begun after another request's end: only the callbacks know its bytes)."""
        if not self._whole_chunk:
            self._header_bytes += size
            if self._header_bytes > MAX_HEADER_BYTES:
                raise _Refused(HEADERS_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages += 1
        self._in_headers = True
        self._whole_chunk = False
        self._request_done = False
        self._header_bytes = 0
        self._arm()  # the next request on a kept-alive connection

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if len(self.headers) >= MAX_HEADERS:  # a short line costs 20 times its bytes parsed
            raise _Refused(HEADERS_TOO_LARGE)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > MAX_HEADER_BYTES:
            raise _Refused(HEADERS_TOO_LARGE)
        super().on_headers_complete()
        if len(self.pipeline) > MAX_PIPELINED:
            raise _Refused(b"")  # a client that sends requests and reads no answer

    def on_message_complete(self) -> None:
        self._request_done = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next waiting request, resumes reading
        unsent = self.transport.get_write_buffer_size()
        if unsent and self._writes is None:
            self._writes = self.loop.call_later(self.header_timeout, self._check_writes, unsent)
        if self.transport.is_closing():
            return
        if self.pipeline:
            self.flow.pause_reading()  # requests still wait: read no more of them
        elif self.cycle.response_complete and not self._request_done:
            # Answered before its body was read: the rest of the body is thrown away as it
            # comes, for as long as headers may take.
            self._arm()


def protocol_class(header_timeout: float) -> type[GuardedProtocol]:
    """The protocol class for one server, with its header deadline."""
    return type("Guarded", (GuardedProtocol,), {"header_timeout": header_timeout})
