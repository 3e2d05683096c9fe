"""Hostile clients that make cheap requests costly, sized by their arguments, and a probe
that watches.

Each attack makes one kind of cheap request that used to cost the server a lot
(memory, a core, or every handler thread) and returns an `Outcome`: the status
codes its calls ended with and how long it took. The resilience tests
(tests/services/test_resilience_*.py) run each one scaled down to seconds;
`bench/soak.py` cycles through them for the whole adversarial phase.

The REST attacks send repeated outputs, large images and empty BYTES elements over
HTTP/REST, and bodies or headers that never finish arriving.

`Probe` is the normal client meanwhile: every 100 ms it calls health and a
normal request, each with a 1 s deadline, and records the slowest answer and
every failure.
"""

from __future__ import annotations

import contextlib
import functools
import io
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc

UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


@dataclass(frozen=True)
class Target:
    """Where the attacks go: the inference server's port, its model, token, metrics port."""

    port: int
    model: str = "digits"
    token: str | None = None
    metrics_port: int | None = None
    host: str = "127.0.0.1"
    http_port: int | None = None  # REST (`--http-port`), for the REST attacks
    ca: str | None = None  # PEM file of the CA that signed the server's certificate: TLS

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self) -> grpc.Channel:
        address = f"{self.host}:{self.port}"
        if self.ca is None:
            return grpc.insecure_channel(address, options=UNLIMITED)
        with open(self.ca, "rb") as pem:
            credentials = grpc.ssl_channel_credentials(pem.read())
        return grpc.secure_channel(address, credentials, options=UNLIMITED)

    def rest_socket(self, timeout: float = 5.0) -> socket.socket:
        """A connection to the REST port, its TLS handshake done when the server has TLS."""
        assert self.http_port is not None, "the target has no REST port (http_port)"
        sock = socket.create_connection((self.host, self.http_port), timeout=timeout)
        if self.ca is None:
            return sock
        import ssl

        return ssl.create_default_context(cafile=self.ca).wrap_socket(
            sock, server_hostname=self.host
        )


@dataclass
class Outcome:
    """What the hostile calls got: status code names ("OK" for an answer) and seconds."""

    name: str
    codes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, code: grpc.StatusCode | str) -> None:
        self.codes[code if isinstance(code, str) else code.name] += 1


def _code(call: Callable[[], Any]) -> str:
    try:
        call()
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "OK"


def _timed(name: str, attack: Callable[[Outcome], None]) -> Outcome:
    outcome = Outcome(name)
    start = time.perf_counter()
    attack(outcome)
    outcome.seconds = time.perf_counter() - start
    return outcome


def normal_request(model: str, batch: int = 1) -> pb.ModelInferRequest:
    """A well-behaved request: `batch` 1x8x8 float inputs, the probabilities back."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=[batch, 1, 8, 8])
    request.raw_input_contents.append(np.zeros((batch, 1, 8, 8), np.float32).tobytes())
    request.outputs.add(name="probabilities")
    return request


# Item 1 -----------------------------------------------------------------------


def repeated_outputs_request(
    model: str, count: int, batch: int = 64, k: int = 0
) -> pb.ModelInferRequest:
    """One request naming `probabilities` `count` times (with classification k if k > 0)."""
    request = normal_request(model, batch)
    del request.outputs[:]
    for _ in range(count):
        out = request.outputs.add(name="probabilities")
        if k:
            out.parameters["classification"].int64_param = k
    return request


def repeated_outputs(target: Target, request: pb.ModelInferRequest) -> Outcome:
    """Send a request built by `repeated_outputs_request` (build it before the clock runs)."""

    def attack(out: Outcome) -> None:
        with target.channel() as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            out.add(_code(lambda: stub.ModelInfer(request, metadata=target.metadata, timeout=60)))

    return _timed("repeated outputs", attack)


# Item 2 -----------------------------------------------------------------------


def made_up_methods(target: Target, calls: int = 3000, length: int = 4096) -> Outcome:
    """`calls` calls, each to a different made-up method of `length` characters under the
    health service's name (which used to skip the token check by prefix)."""

    def attack(out: Outcome) -> None:
        with target.channel() as ch:
            for i in range(calls):
                method = ch.unary_unary(f"/grpc.health.v1.Health/{i:07d}{'x' * length}")
                out.add(_code(functools.partial(method, b"", timeout=10)))

    return _timed("made-up methods", attack)


# Items 3 and 8 ----------------------------------------------------------------


def idle_streams(
    open_stream: Callable[[grpc.Channel, Iterator[Any]], Any],
    channel: Callable[[], grpc.Channel],
    count: int,
    hold: float,
    name: str = "idle streams",
) -> Outcome:
    """Open `count` streams that send nothing, wait up to `hold` seconds for each to end.

    A stream the server refused or ended counts by its status code; one still open at
    the end counts as "open" (and is cancelled).
    """

    def attack(out: Outcome) -> None:
        release = threading.Event()
        lock = threading.Lock()

        def nothing() -> Iterator[Any]:
            release.wait(hold + 30)
            return
            yield  # a generator that sends nothing

        def consume(stream: Any) -> None:
            try:
                for _ in stream:
                    pass
                code = "OK"
            except grpc.RpcError as exc:
                # Cancelled by us at the end: it was open all along.
                cancelled = exc.code() == grpc.StatusCode.CANCELLED and release.is_set()
                code = "open" if cancelled else exc.code().name
            with lock:
                out.add(code)

        with channel() as ch:
            streams = [open_stream(ch, nothing()) for _ in range(count)]
            readers = [threading.Thread(target=consume, args=(s,), daemon=True) for s in streams]
            for reader in readers:
                reader.start()
            deadline = time.monotonic() + hold
            for reader in readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            release.set()
            for stream in streams:
                stream.cancel()
            for reader in readers:
                reader.join(5)

    return _timed(name, attack)


def idle_stream_infer(target: Target, count: int, hold: float) -> Outcome:
    """Item 3: idle ModelStreamInfer streams."""

    def open_stream(ch: grpc.Channel, requests: Iterator[Any]) -> Any:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        return stub.ModelStreamInfer(requests, metadata=target.metadata, timeout=hold + 60)

    return idle_streams(open_stream, target.channel, count, hold, "idle ModelStreamInfer")


# Item 4 -----------------------------------------------------------------------


@functools.cache
def large_png(side: int) -> bytes:
    """A black greyscale PNG of side x side pixels: a few kB that decode to side**2 bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def large_images(target: Target, side: int = 4000, parallel: int = 4) -> Outcome:
    """`parallel` requests at once, each one PNG of side x side pixels for the 8x8 model."""
    png = large_png(side)
    request = pb.ModelInferRequest(model_name=target.model)
    request.inputs.add(name="input", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(png)) + png)

    def attack(out: Outcome) -> None:
        lock = threading.Lock()
        with target.channel() as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            def one() -> None:
                code = _code(lambda: stub.ModelInfer(request, metadata=target.metadata, timeout=60))
                with lock:
                    out.add(code)

            senders = [threading.Thread(target=one) for _ in range(parallel)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(90)

    return _timed("large images", attack)


# Item 5 -----------------------------------------------------------------------


def empty_bytes_requests(model: str, count: int) -> list[pb.ModelInferRequest]:
    """BYTES inputs of `count` empty elements: raw (shape [count], then shape [1]) and typed."""
    raw = b"\0\0\0\0" * count
    requests = []
    for shape in ([count], [1]):
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name="input", datatype="BYTES", shape=shape)
        request.raw_input_contents.append(raw)
        requests.append(request)
    typed = pb.ModelInferRequest(model_name=model)
    tensor = typed.inputs.add(name="input", datatype="BYTES", shape=[count])
    tensor.contents.bytes_contents.extend([b""] * count)
    requests.append(typed)
    return requests


def empty_bytes(target: Target, requests: list[pb.ModelInferRequest]) -> Outcome:
    """Send requests built by `empty_bytes_requests` (build them before the clock runs)."""

    def attack(out: Outcome) -> None:
        with target.channel() as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            for request in requests:
                call = functools.partial(
                    stub.ModelInfer, request, metadata=target.metadata, timeout=60
                )
                out.add(_code(call))

    return _timed("empty BYTES elements", attack)


# Item 6 -----------------------------------------------------------------------


def half_open_metrics(
    target: Target, count: int = 50, hold: float = 3.0, during: Callable[[], None] | None = None
) -> Outcome:
    """`count` connections to the metrics port that send half a request line and wait.

    Each ends as "closed" (the server closed it within `hold` seconds) or "held" (still
    open; then reset, as a vanished client would). `during()` runs while they are open.
    """
    assert target.metrics_port is not None, "the target has no metrics port"

    def attack(out: Outcome) -> None:
        socks = []
        for _ in range(count):
            sock = socket.create_connection((target.host, target.metrics_port), timeout=5)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /metr")
            socks.append(sock)
        if during is not None:
            during()
        deadline = time.monotonic() + hold
        pending = list(socks)
        while pending and time.monotonic() < deadline:
            still = []
            for sock in pending:
                sock.settimeout(0.01)
                try:
                    data = sock.recv(4096)
                    if data:
                        still.append(sock)  # an error page; the close comes next
                    else:
                        out.add("closed")
                except TimeoutError:
                    still.append(sock)
                except OSError:
                    out.add("closed")
            pending = still
            time.sleep(0.05)
        for sock in socks:
            if sock in pending:
                out.add("held")
            # An abortive close (RST), as a client that vanished.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    return _timed("half-open metrics connections", attack)


def scrape(target: Target, timeout: float = 5.0) -> str:
    """GET /metrics as Prometheus would."""
    import urllib.request

    url = f"http://{target.host}:{target.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as page:
        return str(page.read().decode())


# The normal client --------------------------------------------------------------


class Probe:
    """Calls every check each `period` seconds with a `timeout` deadline, in a thread.

    `worst` is the slowest call in seconds and `failures` lists each failed one; with
    `rss_of` (a pid) it also samples that process's resident memory (MiB) into `rss`.
    """

    def __init__(
        self,
        checks: Mapping[str, Callable[[float], Any]],
        *,
        period: float = 0.1,
        timeout: float = 1.0,
        rss_of: int | None = None,
    ) -> None:
        self.checks = checks
        self.period = period
        self.timeout = timeout
        self.rss_of = rss_of
        self.worst = 0.0
        self.calls = 0
        self.failures: list[str] = []
        self.rss: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def _run(self) -> None:
        from bench.servers import rss_mb

        while not self._stop.is_set():
            began = time.monotonic()
            for name, check in self.checks.items():
                start = time.monotonic()
                try:
                    check(self.timeout)
                except Exception as exc:
                    code = exc.code().name if isinstance(exc, grpc.RpcError) else repr(exc)
                    self.failures.append(f"{name}: {code} after {time.monotonic() - start:.2f} s")
                self.worst = max(self.worst, time.monotonic() - start)
                self.calls += 1
            if self.rss_of is not None:
                self.rss.append(rss_mb(self.rss_of))
            self._stop.wait(max(0.0, self.period - (time.monotonic() - began)))

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def peak_rss(self) -> float:
        return max(self.rss, default=0.0)


def inference_checks(target: Target, channel: grpc.Channel) -> dict[str, Callable[[float], Any]]:
    """Health Check and a normal ModelInfer over `channel` (the probe's own connection)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = normal_request(target.model)

    def check_health(timeout: float) -> None:
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        if status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"health says {status}")

    def infer(timeout: float) -> None:
        stub.ModelInfer(request, metadata=target.metadata, timeout=timeout)

    return {"health": check_health, "infer": infer}


# Item 7: REST -------------------------------------------------------------------


def rest_call(
    target: Target,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> int:
    """One REST call with the target's token; returns the HTTP status."""
    import http.client

    if target.http_port is None:
        raise ValueError("the target has no REST port (http_port)")
    sent = {"Content-Type": "application/json", **(headers or {})}
    if target.token:
        sent["Authorization"] = f"Bearer {target.token}"
    connection: http.client.HTTPConnection
    if target.ca is not None:
        import ssl

        context = ssl.create_default_context(cafile=target.ca)
        connection = http.client.HTTPSConnection(
            target.host, target.http_port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.http_port, timeout=timeout)
    try:
        connection.request("GET" if body is None else "POST", path, body=body, headers=sent)
        reply = connection.getresponse()
        reply.read()
        return reply.status
    finally:
        connection.close()


def _infer_path(target: Target) -> str:
    return f"/v2/models/{target.model}/infer"


def rest_binary_body(tensors: list[dict[str, Any]], data: list[bytes]) -> tuple[bytes, str]:
    """A REST infer body with binary tensor data: the JSON header, then each input's bytes;
    returns the body and its Inference-Header-Content-Length."""
    import json

    for tensor, raw in zip(tensors, data, strict=True):
        tensor.setdefault("parameters", {})["binary_data_size"] = len(raw)
    header = json.dumps({"inputs": tensors}).encode()
    return header + b"".join(data), str(len(header))


def rest_repeated_outputs_body(count: int, batch: int = 64) -> tuple[bytes, str]:
    """Item 1 over REST: a batch of `batch` inputs naming `probabilities` `count` times."""
    import json

    raw = np.zeros((batch, 1, 8, 8), np.float32).tobytes()
    tensor = {"name": "input", "datatype": "FP32", "shape": [batch, 1, 8, 8]}
    body, length = rest_binary_body([tensor], [raw])
    header = json.loads(body[: int(length)])
    header["outputs"] = [{"name": "probabilities"}] * count
    text = json.dumps(header).encode()
    return text + raw, str(len(text))


def rest_empty_bytes_body(count: int) -> tuple[bytes, str]:
    """Item 5 over REST: a BYTES input of `count` empty elements as binary data."""
    tensor = {"name": "input", "datatype": "BYTES", "shape": [count]}
    return rest_binary_body([tensor], [b"\0\0\0\0" * count])


def rest_image_body(side: int) -> tuple[bytes, str]:
    """Item 4 over REST: one PNG of side x side pixels as a BYTES input."""
    png = large_png(side)
    tensor = {"name": "input", "datatype": "BYTES", "shape": [1]}
    return rest_binary_body([tensor], [struct.pack("<I", len(png)) + png])


def rest_attack(
    target: Target, name: str, bodies: list[tuple[bytes, str]], parallel: int = 1
) -> Outcome:
    """POST each body (built before the clock runs) to the model's infer path, `parallel`
    copies at once; the outcome counts HTTP statuses."""

    def attack(out: Outcome) -> None:
        lock = threading.Lock()

        def one(body: bytes, length: str) -> None:
            headers = {"Inference-Header-Content-Length": length}
            status = rest_call(target, _infer_path(target), body, headers)
            with lock:
                out.add(str(status))

        for body, length in bodies:
            senders = [threading.Thread(target=one, args=(body, length)) for _ in range(parallel)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(90)

    return _timed(name, attack)


def slow_bodies(target: Target, count: int, hold: float, size: int = 1 << 20) -> Outcome:
    """`count` infer requests that announce a body of `size` bytes, send 10 of them and
    wait `hold` seconds; the outcome counts how each connection ended ("answered <status>"
    or "open" when the server still waited for the body)."""

    def attack(out: Outcome) -> None:
        assert target.http_port is not None
        head = (
            f"POST {_infer_path(target)} HTTP/1.1\r\nHost: {target.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n"
            + (f"Authorization: Bearer {target.token}\r\n" if target.token else "")
            + "\r\n"
        ).encode()
        sockets = []
        try:
            for _ in range(count):
                conn = target.rest_socket()
                conn.sendall(head + b'{"inputs"')
                sockets.append(conn)
            time.sleep(hold)
            for conn in sockets:
                conn.settimeout(0.2)
                try:
                    reply = conn.recv(64)
                except TimeoutError:
                    out.add("open")
                    continue
                status = reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else "?"
                out.add(f"answered {status}" if reply else "closed")
        finally:
            for conn in sockets:
                with contextlib.suppress(OSError):
                    conn.close()

    return _timed("slow REST bodies", attack)


def slow_headers(target: Target, count: int, hold: float) -> Outcome:
    """`count` REST connections, half sending part of a request line and headers, half
    nothing, held `hold` seconds; the outcome counts how each ended ("answered <status>",
    "closed", or "open" when the server still waited)."""

    def attack(out: Outcome) -> None:
        assert target.http_port is not None
        part = f"POST {_infer_path(target)} HTTP/1.1\r\nHost: {target.host}\r\nX-Slow: ".encode()
        sockets = []
        try:
            for i in range(count):
                conn = target.rest_socket()
                if i % 2:
                    conn.sendall(part)
                sockets.append(conn)
            time.sleep(hold)
            for conn in sockets:
                conn.settimeout(0.2)
                try:
                    reply = conn.recv(64)
                except TimeoutError:
                    out.add("open")
                    continue
                except OSError:
                    out.add("closed")
                    continue
                status = reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else "?"
                out.add(f"answered {status}" if reply else "closed")
        finally:
            for conn in sockets:
                with contextlib.suppress(OSError):
                    conn.close()

    return _timed("slow REST headers", attack)


def rest_checks(target: Target) -> dict[str, Callable[[float], Any]]:
    """REST's ready probe and a normal REST infer (JSON in, JSON out)."""
    import json

    body = json.dumps(
        {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
        }
    ).encode()

    def ready(timeout: float) -> None:
        status = rest_call(target, "/v2/health/ready", timeout=timeout)
        if status != 200:
            raise RuntimeError(f"REST ready answered {status}")

    def infer(timeout: float) -> None:
        status = rest_call(target, _infer_path(target), body, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"REST infer answered {status}")

    return {"rest_ready": ready, "rest_infer": infer}
