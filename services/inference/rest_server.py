"""The REST front end: the Open Inference Protocol's HTTP/REST endpoints over the same
`InferenceCore` as gRPC, as a raw ASGI app served by uvicorn (httptools, uvloop).

    GET  /v2/health/live | /v2/health/ready        200, or 400 when not (Triton's choice)
    GET  /v2                                        server metadata
    GET  /v2/models/{m}[/versions/{v}]              model metadata
    GET  .../ready | .../config | .../stats         model ready (200/400), config, statistics
    POST .../infer                                  JSON tensors or binary tensor data
    GET  /v2/models/stats                           every model's statistics
    POST /v2/repository/index                       {"ready": bool} optional
    POST /v2/repository/models/{m}/load | unload

Errors answer {"error": message} with the HTTP status of the domain error's code
(services.common.status.HTTP_STATUS_FOR_CODE). The bearer token, TLS files and
message size limit are the gRPC port's; health live/ready stay open, like gRPC's
health service. Only cheap calls run on the event loop; infer, load and unload run
on a bounded thread pool, and the bytes of bodies being read or served are bounded
in all (`HttpOptions.max_pending_mb`) before a body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import socket
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from services.common.counters import CallCounters
from services.common.errors import InvalidInput, ResourceExhausted
from services.common.logs import request_id_var
from services.common.server import TlsFiles
from services.common.status import http_status_for
from services.inference import rest
from services.inference.core import InferenceCore

log = logging.getLogger("stride.inference.http")

MODEL_PATH = re.compile(
    r"/v2/models/([^/]+)(?:/versions/([0-9]+))?(?:/(infer|ready|config|stats))?"
)
REPOSITORY_PATH = re.compile(r"/v2/repository(?:/[^/]+)?/(index|models/([^/]+)/(load|unload))")
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
# The JSON part of a request: parsed, each number becomes a Python object of 24 to 32
# bytes, so 16 MB of JSON can take about 200 MB; larger tensors go as binary data.
MAX_JSON_BYTES = 16 * 1024 * 1024
JSON = b"application/json"
PROBE_PATHS = OPEN_PATHS  # health: needs no token, never counted against the limit


@dataclass(frozen=True)
class HttpOptions:
    """The REST port: where, with which limits, and the gRPC port's TLS and token."""

    host: str = "0.0.0.0"
    port: int = 8000  # 0: a free one
    threads: int = 64  # infer, load and unload calls running at once; more wait their turn
    max_message_mb: float = 64  # one request body (after decompression) or answer
    max_pending_mb: float = 256  # bytes of all request bodies held at once; more: 429
    tls: TlsFiles | None = None
    auth_token: str | None = None
    grace_period: float = 10.0  # seconds requests in flight get when the server stops
    # Calls in flight (health probes aside) past which a call is answered 429 at once, as
    # gRPC's RESOURCE_EXHAUSTED under --max-concurrent-requests; None: no limit.
    max_concurrent: int | None = None
    # Seconds a request body may take to arrive, all told (a body that never comes would
    # hold its connection and what it sent); past it: 408.
    body_timeout: float = 60.0
    # Seconds a connection may take to send a request's headers (from the connection or
    # the request's first byte); past it: 408 and closed (services/inference/http_protocol).
    header_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("body_timeout", "header_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"HTTP {name.replace('_', ' ')} must be positive, got {value}")
        if self.threads < 1:
            raise ValueError(f"HTTP threads must be at least 1, got {self.threads}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(
                f"max concurrent requests must be at least 1, got {self.max_concurrent}"
            )
        if self.max_message_mb <= 0 or self.max_pending_mb < self.max_message_mb:
            raise ValueError(
                "HTTP message size must be positive and at most the pending bytes limit, got "
                f"{self.max_message_mb} and {self.max_pending_mb} MB"
            )


class Reply(Exception):
    """An answer decided before the core was called (404, 405, 413, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class RestApp:
    """The ASGI app: routing, auth, body limits, error mapping, counters."""

    def __init__(
        self,
        core: InferenceCore,
        options: HttpOptions,
        counters: CallCounters | None = None,
    ) -> None:
        self.core = core
        self.options = options
        self.counters = counters
        self._token = f"Bearer {options.auth_token}".encode() if options.auth_token else None
        self._max_body = int(options.max_message_mb * 1024 * 1024)
        self._budget = int(options.max_pending_mb * 1024 * 1024)
        self._pending = 0  # body bytes held now (touched on the event loop only)
        self._in_flight = 0  # calls being answered, probes aside (the event loop only)
        self.pool = futures.ThreadPoolExecutor(options.threads, thread_name_prefix="http")

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        start = time.perf_counter_ns()
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        rid = (headers.get("x-request-id") or b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        endpoint = endpoint_of(scope["path"])
        admitted = False
        try:
            admitted = self._admit(scope["path"])
            status, body, extra = await self._answer(scope, headers, receive)
        except Exception as exc:
            status, body, extra = self._error(exc, rid, scope["path"])
        finally:
            if admitted:
                self._in_flight -= 1
            request_id_var.reset(token)
        extra = [*extra, (b"x-request-id", rid.encode("latin-1"))]
        try:
            await _respond(send, status, body, extra)
        finally:
            if self.counters is not None:
                ns = time.perf_counter_ns() - start
                self.counters.record("http", endpoint, str(status), ns)

    def _admit(self, path: str) -> bool:
        """Count a call in flight (True), or refuse it past `max_concurrent`; probes are
        neither counted nor refused."""
        limit = self.options.max_concurrent
        if limit is None or path in PROBE_PATHS:
            return False
        if self._in_flight >= limit:
            raise ResourceExhausted(
                f"{limit} calls are in flight, the most this server serves at once "
                "(--max-concurrent-requests); try again later"
            )
        self._in_flight += 1
        return True

    def _error(
        self, exc: Exception, rid: str, path: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if isinstance(exc, Reply):
            status, message = exc.status, str(exc)
        else:
            status, message, expected = http_status_for(exc, rid)
            if expected:
                log.info("%s failed: %d %s", path, status, message)
            else:
                log.error("%s raised an unexpected error", path, exc_info=exc)
        extra = [(b"content-type", JSON)]
        if status == 401:
            extra.append((b"www-authenticate", b"Bearer"))
        return status, json.dumps({"error": message}).encode(), extra

    def _authorize(self, path: str, headers: dict[str, bytes]) -> None:
        if self._token is None or path in OPEN_PATHS:
            return
        given = headers.get("authorization")
        if given is None or not hmac.compare_digest(given, self._token):
            reason = "missing" if given is None else "invalid"
            raise Reply(401, f"{reason} bearer token: send header 'Authorization: Bearer <token>'")

    async def _answer(
        self, scope: dict[str, Any], headers: dict[str, bytes], receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        path, method = scope["path"], scope["method"]
        self._authorize(path, headers)
        core = self.core
        if path in PROBE_PATHS:
            _method(method, "GET")
            ok = core.live() if path.endswith("live") else core.ready()
            return 200 if ok else 400, b"", []
        if path == "/v2":
            _method(method, "GET")
            return 200, _json(rest.server_metadata(core.server_metadata())), _ct()
        if path == "/v2/models/stats":
            _method(method, "GET")
            return 200, _json(rest.statistics(core.statistics())), _ct()
        match = MODEL_PATH.fullmatch(path)
        if match:
            name, version, kind = match.group(1), match.group(2) or "", match.group(3) or ""
            return await self._model(kind, name, version, method, headers, receive)
        match = REPOSITORY_PATH.fullmatch(path)
        if match:
            _method(method, "POST")
            async with self._body(headers, receive) as body:
                return await self._repository(match, body)
        raise Reply(404, "Not Found")

    async def _repository(
        self, match: re.Match[str], body: bytes
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if match.group(1) == "index":
            request = _json_body(body)
            ready = request.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidInput("Invalid value for 'ready': expected a boolean")
            return 200, _json(rest.index(self.core.index(ready))), _ct()
        name, action = match.group(2), match.group(3)
        params = _json_body(body).get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        call = self.core.load if action == "load" else self.core.unload
        await self._run(call, name, list(params))
        return 200, b"", []

    async def _model(
        self,
        kind: str,
        name: str,
        version: str,
        method: str,
        headers: dict[str, bytes],
        receive: Receive,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        core = self.core
        if kind == "infer":
            _method(method, "POST")
            return await self._infer(name, version, headers, receive)
        _method(method, "GET")
        if kind == "ready":
            ok = core.model_ready(name, version)
            if not ok:
                raise Reply(400, "Model version not ready")
            return 200, b"", []
        if kind == "config":
            return 200, _json(rest.model_config(core.model_config(name, version))), _ct()
        if kind == "stats":
            return 200, _json(rest.statistics(core.statistics(name, version))), _ct()
        return (
            200,
            _json(rest.model_metadata(core.model_metadata(name, version))),
            _ct(),
        )

    async def _infer(
        self, name: str, version: str, headers: dict[str, bytes], receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        async with self._body(headers, receive) as body:
            return await self._infer_body(name, version, headers, body)

    async def _infer_body(
        self, name: str, version: str, headers: dict[str, bytes], body: bytes
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        length = headers.get(rest.HEADER_LENGTH)
        json_size = int(length) if length and length.isdigit() else len(body)
        _check_json_size(json_size)
        header, binary = rest.parse_header(body, length.decode("latin-1") if length else None)
        max_bytes = self.core.max_bytes_elements
        request, default = rest.request_from_json(
            name, version, header, binary, max_bytes, getattr(self.core, "counters", None)
        )
        # The request's `timeout` parameter applies as the model's queue policy allows (there
        # is no call deadline over HTTP).
        result = await self._run(self.core.infer, request, None)
        chosen = rest.binary_outputs(header, default) if "outputs" in header else None
        text, chunks = rest.response_to_json(result, chosen, default)
        if not chunks:
            return 200, text, _ct()
        extra = [
            (b"content-type", b"application/octet-stream"),
            (rest.HEADER_LENGTH.encode(), str(len(text)).encode()),
        ]
        return 200, b"".join([text, *chunks]), extra

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    @contextlib.asynccontextmanager
    async def _body(self, headers: dict[str, bytes], receive: Receive) -> AsyncIterator[bytes]:
        """The whole request body, decompressed, counted against the bodies' budget until the
        request is answered; 413 past the message size, 429 past the budget, 408 past the
        body timeout.

        The budget counts bytes as they arrive, not what Content-Length declares: a client
        that declares 64 MB and sends nothing holds nothing (it used to hold a quarter of the
        default budget until it left).
        """
        declared = headers.get("content-length")
        size = int(declared) if declared and declared.isdigit() else 0
        if size > self._max_body:
            raise Reply(
                413, f"request body of {size} bytes exceeds {self._max_body} (--max-message-mb)"
            )
        held = 0
        try:
            parts, total = [], 0
            try:
                async with asyncio.timeout(self.options.body_timeout):
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            raise Reply(400, "the client closed the connection mid-request")
                        chunk = message.get("body", b"")
                        total += len(chunk)
                        if total > self._max_body:
                            raise Reply(
                                413,
                                f"request body exceeds {self._max_body} bytes (--max-message-mb)",
                            )
                        if total > held:
                            held += self._reserve(total - held)
                        parts.append(chunk)
                        if not message.get("more_body", False):
                            break
            except TimeoutError:
                raise Reply(
                    408,
                    f"the request body did not arrive within {self.options.body_timeout:g} s "
                    f"({total} of {size or 'unknown'} bytes; --http-body-timeout)",
                ) from None
            if not held:
                held = self._reserve(1)  # an empty body still takes its turn
            encoding = headers.get("content-encoding", b"identity").decode("latin-1").lower()
            body = _decompress(b"".join(parts), encoding, self._max_body)
            if len(body) > held:  # inflated: the budget counts what is held
                held += self._reserve(len(body) - held)
            yield body
        finally:
            self._pending -= held

    def _reserve(self, size: int) -> int:
        """Count `size` more body bytes as held (released by `_body`), or refuse."""
        if self._pending + size > self._budget:
            raise ResourceExhausted(
                "too many request bytes are being served at once (a budget --max-message-mb sets); "
                "try again later"
            )
        self._pending += size
        return size

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def endpoint_of(path: str) -> str:
    """The endpoint's name for the metrics (a fixed set, whatever the path)."""
    if path in ("/v2/health/live", "/v2/health/ready"):
        return path.rsplit("/", 1)[-1]
    if path == "/v2":
        return "metadata"
    if path == "/v2/models/stats":
        return "stats"
    match = MODEL_PATH.fullmatch(path)
    if match:
        kind = match.group(3) or "model_metadata"
        return "model_ready" if kind == "ready" else kind
    match = REPOSITORY_PATH.fullmatch(path)
    if match:
        return "index" if match.group(1) == "index" else match.group(3)
    return "other"


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise Reply(415, f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding}: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise Reply(413, f"the decompressed body exceeds {limit} bytes (--max-message-mb)")
    return out


def _method(given: str, wanted: str) -> None:
    if given != wanted:
        raise Reply(405, "Method Not Allowed")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _ct() -> list[tuple[bytes, bytes]]:
    return [(b"content-type", JSON)]


def _check_json_size(size: int) -> None:
    if size > MAX_JSON_BYTES:
        raise Reply(
            413,
            f"the JSON part of the request is {size} bytes, more than {MAX_JSON_BYTES}: send "
            "large tensors as binary data (parameter binary_data_size)",
        )


def _json_body(body: bytes) -> dict[str, Any]:
    _check_json_size(len(body))
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput("the request must be a JSON object")
    return value


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HttpServer:
    """uvicorn serving a RestApp on its own thread and event loop, until `stop()`."""

    def __init__(
        self, core: InferenceCore, options: HttpOptions, counters: CallCounters | None = None
    ) -> None:
        import uvicorn

        from services.inference.http_protocol import with_header_timeout

        self.options = options
        self.app = RestApp(core, options, counters)
        tls = options.tls
        config = uvicorn.Config(
            self.app,
            loop="uvloop",
            http=with_header_timeout(options.header_timeout),
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=max(1, round(options.grace_period)),
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            ssl_ca_certs=str(tls.ca) if tls and tls.ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.ca else ssl.CERT_NONE,
        )
        self._server = uvicorn.Server(config)
        self._socket = _listen(options.host, options.port)
        self.port = int(self._socket.getsockname()[1])
        self.tls = tls is not None
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), name="http", daemon=True
        )

    def start(self, timeout: float = 30) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OSError(f"the HTTP server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop taking connections, let requests in flight finish (the grace period)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(self.options.grace_period + 5)
        with contextlib.suppress(OSError):
            self._socket.close()
        self.app.close()


def _listen(host: str, port: int) -> socket.socket:
    """Bind now, so that a busy port fails `stride serve`'s start with a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen for HTTP on {host}:{port}: {exc}") from exc
    sock.set_inheritable(True)
    return sock
