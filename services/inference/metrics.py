"""Prometheus metrics on an HTTP port, with Triton's metric names.

Rendered at scrape time from the models' statistics (nothing is updated per
request), in the Prometheus text format. Counters carry Triton's names exactly
(`nv_inference_request_success`, not `..._total`), so dashboards built for
Triton work unchanged.

The port is plain HTTP without authentication unless the server is told to put
it behind the gRPC port's TLS (`stride serve --metrics-tls on`); the Kubernetes
manifests rely on a NetworkPolicy that lets only the monitoring namespace reach it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.common.counters import CallCounters, CallTotals
from services.common.server import TlsFiles
from services.inference.model import ModelVersion
from services.inference.stats import Snapshot

log = logging.getLogger("stride.inference.metrics")

# name, type, help, value from a snapshot
METRICS: list[tuple[str, str, str, Callable[[Snapshot], float]]] = [
    (
        "nv_inference_request_success",
        "counter",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_request_failure",
        "counter",
        "Number of failed inference requests, all batch sizes",
        lambda s: s.fail.count,
    ),
    (
        "nv_inference_count",
        "counter",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "counter",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "counter",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        lambda s: (s.success.ns + s.fail.ns) // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "counter",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "counter",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "counter",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "counter",
        "Cumulative inference compute output duration in microseconds (does not include cached "
        "requests)",
        lambda s: s.compute_output.ns // 1000,
    ),
    (
        "nv_inference_pending_request_count",
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
        lambda s: s.pending,
    ),
]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


CALL_METRICS = (
    ("stride_requests", "Calls answered, by protocol (grpc, http), method and status", "count"),
    (
        "stride_request_duration_us",
        "Cumulative time calls took to answer in microseconds, by protocol, method and status",
        "us",
    ),
)


# (protocol, method, outcome) -> totals; (protocol, where) -> ignored request parameters
Calls = tuple[dict[tuple[str, str, str], CallTotals], dict[tuple[str, str], int]]


@dataclass(frozen=True)
class WorkerCalls:
    """What one process of a server of several answered (stride serve --workers)."""

    index: int
    pid: int
    calls: dict[str, int]  # protocol -> calls answered


def _calls(totals: dict[tuple[str, str, str], CallTotals]) -> list[str]:
    lines = []
    for name, help_text, what in CALL_METRICS:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} counter")
        for (protocol, method, outcome), t in totals.items():
            labels = f'protocol="{protocol}",method="{_label(method)}",status="{_label(outcome)}"'
            lines.append(f"{name}{{{labels}}} {t.count if what == 'count' else t.ns // 1000}")
    return lines


def render(models: list[ModelVersion], counters: CallCounters | None = None) -> str:
    """The metrics page for these model versions (Prometheus text format 0.0.4), and the
    calls per protocol when `counters` are given."""
    snaps = [(m.name, str(m.version), m.stats.snapshot(pending=m.batcher.pending)) for m in models]
    calls = None if counters is None else (counters.snapshot(), counters.ignored_parameters())
    return render_page(snaps, calls)


def render_page(
    snaps: Sequence[tuple[str, str, Snapshot]],
    calls: Calls | None = None,
    workers: Sequence[WorkerCalls] = (),
) -> str:
    """The metrics page from statistics by (model, version), the calls counted per
    protocol, and for a server of several processes what each of them answered."""
    lines = []
    for name, kind, help_text, value in METRICS:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for model, version, snap in snaps:
            labels = f'model="{_label(model)}",version="{_label(version)}"'
            lines.append(f"{name}{{{labels}}} {value(snap)}")
    if calls is not None:
        totals, ignored = calls
        lines += _calls(totals)
        lines.append(
            "# HELP stride_ignored_parameters Request parameters ignored as unknown, by "
            "protocol and place (request, input, output)"
        )
        lines.append("# TYPE stride_ignored_parameters counter")
        for (protocol, where), count in ignored.items():
            lines.append(
                f'stride_ignored_parameters{{protocol="{protocol}",where="{where}"}} {count}'
            )
    if workers:
        lines.append("# HELP stride_workers Server processes sharing the ports (--workers)")
        lines.append("# TYPE stride_workers gauge")
        lines.append(f"stride_workers {len(workers)}")
        lines.append(
            "# HELP stride_worker_requests Calls answered by each server process, by protocol "
            "(the kernel spreads connections among them)"
        )
        lines.append("# TYPE stride_worker_requests counter")
        for worker in workers:
            for protocol, count in sorted(worker.calls.items()):
                labels = f'worker="{worker.index}",pid="{worker.pid}",protocol="{protocol}"'
                lines.append(f"stride_worker_requests{{{labels}}} {count}")
    return "\n".join(lines) + "\n"


DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_TIMEOUT = 5.0


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection, but at most `max_connections` of them (a quarter of them,
    at least one, from one client address), each ended after `timeout` seconds however
    slowly its client trickles bytes.

    The standard server keeps a thread for every half-sent request for ever, and when
    one client holds every connection, no scrape is answered.
    """

    daemon_threads = True
    # Connections the kernel queues until they are accepted (and refused if need be): the
    # default of 5 made clients wait out SYN retries while the Python side was busy.
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_peer = max(1, max_connections // 4)
        self.connection_timeout = timeout
        self.refused = 0
        self._ssl = ssl_context
        self._open: dict[socket.socket, float] = {}  # connection -> when it must be closed
        self._peers: dict[str, int] = {}  # open connections per client address
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self._ssl is not None:  # the handshake happens in the connection's own thread
            sock = self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = _peer(client_address)
        with self._open_lock:
            mine = self._peers.get(peer, 0)
            full = len(self._open) >= self.max_connections or mine >= self.max_per_peer
            if not full:
                self._open[request] = time.monotonic() + self.connection_timeout
                self._peers[peer] = mine + 1
        if full:
            self.refused += 1
            self.shutdown_request(request)  # closed at once: no thread, no reply
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request, peer)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.connection_timeout)
            if self._ssl is not None:
                request.do_handshake()
            super().process_request_thread(request, client_address)
        except OSError:  # a failed handshake or a timeout: nothing to answer
            log.debug("metrics connection from %s failed", client_address, exc_info=True)
            self.shutdown_request(request)
        finally:
            self._forget(request, _peer(client_address))

    def _forget(self, request: Any, peer: str) -> None:
        with self._open_lock:
            if self._open.pop(request, None) is not None:
                left = self._peers.get(peer, 0) - 1
                if left > 0:
                    self._peers[peer] = left
                else:
                    self._peers.pop(peer, None)

    def service_actions(self) -> None:
        # Called by serve_forever between polls: the socket timeout bounds each read, this
        # bounds the whole connection.
        now = time.monotonic()
        with self._open_lock:
            late = [sock for sock, until in self._open.items() if until < now]
        for sock in late:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-request is routine here, not a traceback on stderr.
        log.debug("metrics connection from %s failed", client_address, exc_info=True)

    @property
    def open_connections(self) -> int:
        with self._open_lock:
            return len(self._open)


def _peer(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) else ""


def server_ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """The main port's TLS for the metrics port (with a CA: clients need certificates)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert), str(tls.key))
    if tls.ca is not None:
        context.load_verify_locations(str(tls.ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class MetricsServer:
    """Serves GET /metrics on its own port until `stop()`.

    `max_connections` connections at once, a quarter of them from one client address
    (more are closed unanswered), each for at most `timeout` seconds; with `tls`, over
    the same TLS (and client certificates) as the gRPC port.
    """

    def __init__(
        self,
        host: str,
        port: int,
        models: Callable[[], list[ModelVersion]] | None = None,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout: float = DEFAULT_TIMEOUT,
        tls: TlsFiles | None = None,
        counters: CallCounters | None = None,
        page: Callable[[], str] | None = None,  # the page itself, instead of models and counters
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"metrics connections must be at least 1, got {max_connections}")
        if timeout <= 0:
            raise ValueError(f"metrics timeout must be positive, got {timeout} s")
        if page is None:
            if models is None:
                raise ValueError("the metrics server needs models or a page to render")
            listed = models
            page = lambda: render(listed(), counters)  # noqa: E731
        render_page_now = page

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = render_page_now().encode()
                except OSError as exc:  # a server of several processes: one did not answer
                    log.warning("metrics not rendered: %s", exc)
                    self.send_error(503, "the statistics of the server are unavailable")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics: " + format, *args)

        context = server_ssl_context(tls) if tls is not None else None
        try:
            self._server = _HTTPServer(
                (host, port),
                Handler,
                max_connections=max_connections,
                timeout=timeout,
                ssl_context=context,
            )
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self.port = self._server.server_address[1]
        self.tls = tls is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="metrics", daemon=True
        )

    @property
    def refused(self) -> int:
        """Connections closed unanswered because `max_connections` were open."""
        return self._server.refused

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
