"""Hostile REST clients, sized by their arguments.

Each attack speaks HTTP/1.1 over its own sockets (TLS when the target has a CA), so it
can do what no well-behaved client library does: send header lines for ever, pipeline
requests without reading the answers, withhold the last byte of a body, open
connections and never finish their TLS handshake. Each returns an `Outcome` (how its
connections or calls ended, and how long it took); `stop` is a callable the attack
polls, so that a test can end an attack that has already taken too much memory
instead of taking the machine down with the server it measures.

`source` is the local address an attack connects from: on Linux every 127.x.y.z is
the loopback, so one machine can play several peers (the limits per peer tell them
apart by address).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.attacks import Outcome, _timed

Stop = Callable[[], bool]


def never() -> bool:
    return False


@dataclass(frozen=True)
class RestTarget:
    """A REST port: where, with which model, token and TLS (the CA that signed it)."""

    port: int
    model: str = "digits"
    token: str | None = None
    ca: str | None = None  # PEM file: the port speaks TLS
    host: str = "127.0.0.1"
    metrics_port: int | None = None

    def context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca) if self.ca else None

    def connect(self, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
        """A connection from `source`, its TLS handshake done when the port has TLS."""
        sock = socket.create_connection(
            (self.host, self.port), timeout=timeout, source_address=(source, 0)
        )
        context = self.context()
        if context is None:
            return sock
        return context.wrap_socket(sock, server_hostname=self.host)

    def auth(self) -> str:
        return f"Authorization: Bearer {self.token}\r\n" if self.token else ""


def call(
    target: RestTarget,
    path: str,
    body: bytes | None = None,
    *,
    timeout: float = 10.0,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One REST call (GET without a body, else POST) with the target's token; returns the
    status and the body."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if target.token:
        sent["Authorization"] = f"Bearer {target.token}"
    address = (source, 0)
    connection: http.client.HTTPConnection
    if target.ca:
        connection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=target.context(),
            source_address=address,
        )  # fmt: skip
    else:
        connection = http.client.HTTPConnection(
            target.host, target.port, timeout=timeout, source_address=address
        )
    try:
        connection.request("GET" if body is None else "POST", path, body=body, headers=sent)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def infer_body(model_rows: int = 1) -> bytes:
    """A well-behaved JSON infer request for the 1x8x8 digits-shaped model."""
    tensor = {"name": "input", "datatype": "FP32", "shape": [model_rows, 1, 8, 8]}
    tensor["data"] = [0.25] * (64 * model_rows)
    return json.dumps({"inputs": [tensor]}).encode()


def checks(target: RestTarget, source: str = "127.0.0.1") -> dict[str, Callable[[float], Any]]:
    """The well-behaved REST client: ready and a JSON infer, from `source`."""
    body = infer_body()
    path = f"/v2/models/{target.model}/infer"

    def ready(timeout: float) -> None:
        status, _ = call(target, "/v2/health/ready", timeout=timeout, source=source)
        if status != 200:
            raise RuntimeError(f"REST ready answered {status}")

    def infer(timeout: float) -> None:
        status, reply = call(target, path, body, timeout=timeout, source=source)
        if status != 200:
            raise RuntimeError(f"REST infer answered {status}: {reply[:200]!r}")

    return {"rest_ready": ready, "rest_infer": infer}


def _ending(sock: socket.socket, wait: float = 0.2) -> str:
    """How the server left a connection: "answered <status>", "closed" or "open"."""
    sock.settimeout(wait)
    try:
        reply = sock.recv(64)
    except TimeoutError:
        return "open"
    except OSError:
        return "closed"
    if reply.startswith(b"HTTP/"):
        return f"answered {reply.split(b' ', 2)[1].decode()}"
    return "closed" if not reply else "data"


def _abort(sock: socket.socket) -> None:
    """Close as a client that vanished would (RST), so nothing lingers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _flood(sock: socket.socket, chunk: bytes, seconds: float, stop: Stop) -> str:
    """Send `chunk` again and again until the server answers or stops the connection,
    `stop()` says so or `seconds` pass; returns how it ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop():
        if select.select([sock], [], [], 0)[0]:
            ending = _ending(sock)
            if ending != "open":  # not just a TLS session ticket
                return ending
        sock.settimeout(1.0)
        try:
            sock.sendall(chunk)
        except TimeoutError:
            continue  # the server stopped reading (it may have paused the connection)
        except OSError:
            return "closed"
    return _ending(sock)


def header_flood(
    target: RestTarget, seconds: float, stop: Stop = never, *, one_value: bool = False
) -> Outcome:
    """Item 2: a request whose headers never end, `a: b` lines as fast as the server reads
    them (or, with `one_value`, a single header value that never ends)."""

    def attack(out: Outcome) -> None:
        sock = target.connect()
        try:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
            if one_value:
                sock.sendall(b"X-Long: ")
                chunk = b"a" * 65536
            else:
                chunk = b"a: b\r\n" * 10923
            out.add(_flood(sock, chunk, seconds, stop))
        finally:
            _abort(sock)

    return _timed("REST header flood", attack)


def pipeline_flood(target: RestTarget, seconds: float, stop: Stop = never) -> Outcome:
    """Item 3: pipelined GETs of the (open) live probe, sent without reading an answer until
    the server answers or stops the connection, or `seconds` pass; then the answers are
    read (not as fast as they came): "closed" when the server ended the connection within
    5 s, "open" when it kept it."""

    def attack(out: Outcome) -> None:
        sock = target.connect()
        try:
            chunk = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
            ending = _flood(sock, chunk, seconds, stop)
            out.add(ending if ending in ("closed", "open") else _drained(sock, 5.0))
        finally:
            _abort(sock)

    return _timed("REST pipelined requests never read", attack)


def _drained(sock: socket.socket, timeout: float) -> str:
    """Read until the server closes the connection ("closed") or `timeout` passes ("open")."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return "closed"
        except TimeoutError:
            continue
        except OSError:
            return "closed"
    return "open"


def empty_objects_body(size: int) -> bytes:
    """Item 4: an infer request of about `size` bytes whose data is `{}` objects, each a
    few bytes of JSON and about 70 bytes parsed."""
    count = max(1, size // 3)
    data = b"[" + b"{}," * (count - 1) + b"{}]"
    head = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,8,8],"data":'
    return head + data + b"}]}"


def parallel_posts(
    target: RestTarget,
    name: str,
    body: bytes,
    parallel: int,
    timeout: float = 120,
    source: str = "127.0.0.2",
) -> Outcome:
    """POST `body` (built before the clock runs) to the infer path from `parallel` clients
    at once, from `source`; the outcome counts HTTP statuses."""

    def attack(out: Outcome) -> None:
        lock = threading.Lock()
        path = f"/v2/models/{target.model}/infer"

        def one() -> None:
            try:
                status = str(call(target, path, body, timeout=timeout, source=source)[0])
            except OSError as exc:
                status = type(exc).__name__
            with lock:
                out.add(status)

        senders = [threading.Thread(target=one) for _ in range(parallel)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout + 10)

    return _timed(name, attack)


@contextlib.contextmanager
def withheld_bodies(
    target: RestTarget, count: int, size: int, source: str = "127.0.0.2"
) -> Iterator[Outcome]:
    """Item 9: `count` infer requests from `source` with binary tensor data that send all but
    the last byte of a `size`-byte body and wait; inside the block they are held. The
    outcome counts what each had been answered when the block ended ("open": still
    waiting for its byte)."""
    out = Outcome("withheld REST bodies")
    head = (
        f"POST /v2/models/{target.model}/infer HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
        f"Inference-Header-Content-Length: 2\r\n{target.auth()}\r\n"
    ).encode()
    payload = b"{}" + bytes(size - 3)  # binary tensor data after a 2-byte JSON header
    socks: list[socket.socket] = []

    def send(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(payload)

    start = time.perf_counter()
    try:
        for _ in range(count):
            sock = target.connect(source, timeout=60)
            sock.sendall(head)
            socks.append(sock)
        senders = [threading.Thread(target=send, args=(s,)) for s in socks]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
        yield out
    finally:
        for sock in socks:
            out.add(_ending(sock, 0.05))
            _abort(sock)
        out.seconds = time.perf_counter() - start


def silent_connections(
    target: RestTarget,
    count: int,
    hold: float,
    *,
    source: str = "127.0.0.2",
    port: int | None = None,
    tls_handshake: bool = False,
) -> Outcome:
    """Item 8: `count` connections from `source` that send nothing (with `tls_handshake`,
    half a TLS ClientHello), held up to `hold` seconds; each ends "closed" (by the server,
    with the second it happened in), "answered <status>", or "open"."""

    def attack(out: Outcome) -> None:
        socks: list[tuple[socket.socket, float]] = []
        try:
            for _ in range(count):
                try:
                    sock = socket.create_connection(
                        (target.host, port or target.port), timeout=5, source_address=(source, 0)
                    )
                except OSError:
                    out.add("refused")
                    continue
                if tls_handshake:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                socks.append((sock, time.monotonic()))
            deadline = time.monotonic() + hold
            pending = list(socks)
            while pending and time.monotonic() < deadline:
                still = []
                for sock, opened in pending:
                    sock.settimeout(0.001)
                    try:
                        data = sock.recv(64)
                    except TimeoutError:
                        still.append((sock, opened))
                        continue
                    except OSError:
                        data = b""
                    if data.startswith(b"HTTP/"):
                        out.add(f"answered {data.split(b' ', 2)[1].decode()}")
                    else:
                        out.add("closed")
                pending = still
                time.sleep(0.05)
            for _ in pending:
                out.add("open")
        finally:
            for sock, _ in socks:
                _abort(sock)

    return _timed("silent REST connections", attack)


@contextlib.contextmanager
def held_metrics_connections(
    target: RestTarget, count: int, source: str = "127.0.0.2"
) -> Iterator[int]:
    """Item 13: `count` connections to the metrics port from `source`, each sending half a
    request line and then nothing, reopened whenever the server closes one, while the
    block runs; yields nothing useful (the count asked for)."""
    assert target.metrics_port is not None, "the target has no metrics port"
    stop = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            try:
                sock = socket.create_connection(
                    (target.host, target.metrics_port), timeout=2, source_address=(source, 0)
                )
            except OSError:
                stop.wait(0.05)
                continue
            try:
                sock.sendall(b"GET /metr")
                sock.settimeout(0.1)
                while not stop.is_set():
                    try:
                        if not sock.recv(64):
                            break  # closed by the server: open another at once
                    except TimeoutError:
                        continue
                    except OSError:
                        break
            except OSError:
                pass
            finally:
                _abort(sock)

    holders = [threading.Thread(target=hold, daemon=True) for _ in range(count)]
    for holder in holders:
        holder.start()
    time.sleep(0.5)  # every holder has its connection
    try:
        yield count
    finally:
        stop.set()
        for holder in holders:
            holder.join(5)


def scrape(target: RestTarget, source: str = "127.0.0.1", timeout: float = 5.0) -> int:
    """GET /metrics from `source`; the HTTP status."""
    assert target.metrics_port is not None
    connection = http.client.HTTPConnection(
        target.host, target.metrics_port, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request("GET", "/metrics")
        reply = connection.getresponse()
        reply.read()
        return reply.status
    finally:
        connection.close()
