"""A TCP relay that makes a client library look like another peer.

Per-peer limits tell clients apart by address, and on Linux every 127.x.y.z is the
loopback, so one machine can play several peers; but a gRPC channel cannot choose
the address it connects from. `Relay` listens on 127.0.0.1 and opens, for each
connection it takes, one to the server from `source` (127.0.0.2 by default), then
copies bytes both ways (TLS passes through untouched). A soak's hostile client
connects to the relay; the server sees it as a peer of its own.

    with Relay(server_port, source="127.0.0.2") as relay:
        channel = grpc.secure_channel(f"127.0.0.1:{relay.port}", credentials)
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """127.0.0.1:`port` -> `host`:`target` from `source`, one thread pair per connection."""

    def __init__(self, target: int, *, source: str = "127.0.0.2", host: str = "127.0.0.1") -> None:
        self.target = (host, target)
        self.source = source
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="relay", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(
                    self.target, timeout=10, source_address=(self.source, 0)
                )
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):  # one side closed: close both, as a proxy would
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._sockets.discard(sock)
                with contextlib.suppress(OSError):
                    sock.close()
