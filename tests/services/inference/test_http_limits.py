"""The REST port's limits before and around a request, in-process, over raw sockets: header
bytes, pipelined requests, connections per server and per client address, the time an
unread body may take after its answer, malformed JSON, and the extensions Stride lacks.
(tests/services/test_resilience_rest.py runs the attacks against `stride serve`.)"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common import ServerOptions
from services.inference import http_protocol, rest
from services.inference.rest_server import HttpOptions
from services.inference.server import InferenceServer
from tests.services.inference.onnx_models import add_model

HEADER_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceServer]:
    repo = tmp_path_factory.mktemp("limits") / "repository"
    add_model(repo, "digits")
    http = HttpOptions(
        host="127.0.0.1", port=0, grace_period=1, header_timeout=HEADER_TIMEOUT,
        max_connections=6, max_connections_per_peer=3, max_message_mb=4, memory_budget_mb=8,
        memory_budget_mb_per_peer=4,
    )  # fmt: skip
    options = ServerOptions(host="127.0.0.1", port=0, grace_period=1)
    srv = InferenceServer(repo, options, metrics=None, http=http).start()
    yield srv
    srv.stop(0)


def connect(server: InferenceServer, source: str = "127.0.0.1") -> socket.socket:
    assert server.http is not None
    return socket.create_connection(
        ("127.0.0.1", server.http.port), timeout=10, source_address=(source, 0)
    )


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not piece:
            break
        data += piece
    return data


def statuses(data: bytes) -> list[int]:
    """The status of every answer in `data` (answers to pipelined requests follow each
    other's bodies without a line break)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def request(path: str, body: bytes = b"", headers: str = "", method: str = "") -> bytes:
    method = method or ("POST" if body else "GET")
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


def ask(server: InferenceServer, raw: bytes, source: str = "127.0.0.1") -> tuple[int, Any]:
    """One request on its own connection (closed by the server after its answer); its status
    and JSON body."""
    head, _, rest_of = raw.partition(b"\r\n")
    with connect(server, source) as sock:
        sock.sendall(head + b"\r\nConnection: close\r\n" + rest_of)
        data = read_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    json_body = b"application/json" in head
    return statuses(head)[0], json.loads(body) if json_body else body.decode()


def test_headers_past_the_limit_are_answered_431(server: InferenceServer) -> None:
    limit = http_protocol.MAX_HEADER_BYTES
    big = "X-Big: " + "a" * (limit + 100) + "\r\n"
    assert ask(server, request("/v2/health/live", headers=big))[0] == 431
    many = "a: b\r\n" * (http_protocol.MAX_HEADERS + 1)  # short lines cost most parsed
    assert ask(server, request("/v2/health/live", headers=many))[0] == 431
    # Just under the limit is served, also with a body in the same read after it.
    fine = "X-Fine: " + "a" * (limit - 400) + "\r\n"
    assert ask(server, request("/v2/health/live", headers=fine))[0] == 200
    body = b'{"inputs": []}' + b" " * 200_000
    status, answer = ask(server, request("/v2/models/digits/infer", body, headers=fine))
    assert status == 400 and "no inputs" in answer["error"]


def test_a_header_that_never_ends_is_cut_at_the_limit(server: InferenceServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Long: ")
        for _ in range(2 * http_protocol.MAX_HEADER_BYTES // 1024):
            try:
                sock.sendall(b"a" * 1024)
            except OSError:
                break
            time.sleep(0.001)
        assert statuses(read_all(sock)) == [431]


def test_pipelined_requests_are_answered_in_order_up_to_a_bound(server: InferenceServer) -> None:
    few = request("/v2/health/live") * 4 + request("/v2/health/ready")
    with connect(server) as sock:
        sock.sendall(few + request("/v2/health/live", headers="Connection: close\r\n"))
        data = read_all(sock)
    assert statuses(data) == [200] * 6 and data.count(b'{"ready":true}') == 1
    with connect(server) as sock:  # more waiting than MAX_PIPELINED: the connection ends
        sock.sendall(request("/v2/health/live") * 200)
        answered = statuses(read_all(sock))
    assert answered.count(200) <= http_protocol.MAX_PIPELINED + 2


def test_connections_are_capped_per_address_and_in_all(server: InferenceServer) -> None:
    assert server.http is not None
    held = [connect(server, "127.0.0.2") for _ in range(3)]
    try:
        wait_for(lambda: server.http.connections.open == 3)
        with connect(server, "127.0.0.2") as extra:  # a fourth from the same address
            assert b"503 Service Unavailable" in read_all(extra)
        held += [connect(server, source) for source in ("127.0.0.3",) * 3]
        wait_for(lambda: server.http.connections.open == 6)
        with connect(server, "127.0.0.4") as extra:  # the seventh in all
            assert b"too many connections" in read_all(extra)
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: server.http.connections.open == 0)
    assert ask(server, request("/v2/health/live"), "127.0.0.2")[0] == 200


def test_an_unread_body_after_an_early_answer_gets_the_header_time(
    server: InferenceServer,
) -> None:
    """A request refused before its body was read (404 here) is answered at once; the
    connection then gets as long as headers do to send the rest, thrown away, not for ever."""
    with connect(server) as sock:
        sock.sendall(b"POST /v2/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{}")
        start = time.monotonic()
        data = read_all(sock, timeout=30)
        waited = time.monotonic() - start
    assert statuses(data) == [404]
    assert waited < 25  # closed by the server (after about HEADER_TIMEOUT), not by read_all


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nests arrays or objects too deeply"),
        (b'{"inputs": [], "id": ' + b"7" * 5000 + b"}", "a number is out of range"),
        (b'{"inputs": [\xff]}', "not valid UTF-8"),
        (
            b'{"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], '
            b'"data": ["\\ud800"]}]}',
            "lone surrogate",
        ),
    ],
    ids=["nested 2,000 deep", "integer of 5,000 digits", "not UTF-8", "lone surrogate"],
)
def test_malformed_json_is_a_400_naming_the_problem(
    server: InferenceServer, body: bytes, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "stride.inference.http"):
        status, answer = ask(server, request("/v2/models/digits/infer", body))
    assert status == 400 and message in answer["error"], answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_large_json_is_parsed_on_the_thread_pool_and_small_json_on_the_loop(
    server: InferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON that costs more than INLINE_COST parsed is parsed on a pool thread ("http-work"),
    never on the event loop's ("http"); a small request is answered on the loop, where a
    hand-over to a thread would cost more than the parse."""
    threads = []
    loads = rest.loads

    def spy(data: Any) -> Any:
        threads.append(threading.current_thread().name)
        return loads(data)

    monkeypatch.setattr(rest, "loads", spy)
    x = [0.5] * 64
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": x}
    small = json.dumps({"inputs": [tensor]}).encode()
    large = json.dumps({"inputs": [tensor], "id": "x" * (600 << 10)}).encode()
    repository = b'{"ready": true}'
    for body, path in ((small, "/v2/models/digits/infer"), (large, "/v2/models/digits/infer"),
                       (repository, "/v2/repository/index")):  # fmt: skip
        assert ask(server, request(path, body))[0] == 200
    assert threads[0] == "http" and all(t.startswith("http-work") for t in threads[1:]), threads


def test_json_that_would_cost_more_than_a_client_may_hold_is_413(server: InferenceServer) -> None:
    body = b'{"inputs": [' + b"{}," * 200_000 + b"{}]}"  # 0.6 MB, about 12 MB parsed
    status, answer = ask(server, request("/v2/models/digits/infer", body))
    assert status == 413 and "more than one client may hold" in answer["error"]
    assert server.http is not None
    wait_for(lambda: server.http.app.budget.held == 0)


@pytest.mark.parametrize(
    ("method", "path", "status", "what"),
    [
        ("GET", "/v2/systemsharedmemory/status", 503, "system shared memory"),
        ("POST", "/v2/systemsharedmemory/region/r/register", 503, "system shared memory"),
        ("GET", "/v2/systemsharedmemory/region/r/register", 405, "Method Not Allowed"),
        ("POST", "/v2/cudasharedmemory/region/r/unregister", 503, "CUDA shared memory"),
        ("GET", "/v2/trace/setting", 503, "tracing"),
        ("POST", "/v2/models/digits/trace/setting", 503, "tracing"),
        ("POST", "/v2/logging", 503, "dynamic logging"),
        ("PUT", "/v2/logging", 405, "Method Not Allowed"),
    ],
)
def test_extensions_stride_lacks_are_answered_as_triton_answers_them(
    server: InferenceServer, method: str, path: str, status: int, what: str
) -> None:
    got, answer = ask(server, request(path, method=method))
    assert got == status and what in answer["error"]
    if status == 503:
        assert answer["error"] == f"the server does not support {what}"


def wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_an_answer_the_client_does_not_read_is_dropped(tmp_path: Path) -> None:
    """A 12 MB answer (the request's id, echoed) to a client that reads nothing: once its
    bytes have not moved for the header time, the server drops it with the connection
    instead of keeping it for as long as the client stays."""
    add_model(tmp_path, "digits")
    http = HttpOptions(host="127.0.0.1", port=0, grace_period=1, header_timeout=HEADER_TIMEOUT)
    options = ServerOptions(host="127.0.0.1", port=0, grace_period=1)
    srv = InferenceServer(tmp_path, options, metrics=None, http=http).start()
    try:
        tensor = {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0] * 64}
        body = json.dumps({"id": "x" * (12 << 20), "inputs": [tensor]}).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert srv.http is not None
        sock.connect(("127.0.0.1", srv.http.port))
        with sock:
            sock.sendall(request("/v2/models/digits/infer", body))
            time.sleep(8 * HEADER_TIMEOUT)  # reading nothing
            received = len(read_all(sock, timeout=30))
        assert received < len(body)  # cut short: the rest was dropped
    finally:
        srv.stop(0)


def test_several_processes_can_listen_on_one_port_with_reuse_port() -> None:
    """`HttpOptions(reuse_port=True)`: a second server process binds the same port (the
    kernel spreads connections among them); without it the port is busy."""
    from services.inference.rest_server import _listen

    first = _listen("127.0.0.1", 0, reuse_port=True)
    port = first.getsockname()[1]
    try:
        second = _listen("127.0.0.1", port, reuse_port=True)
        second.close()
        with pytest.raises(OSError, match="cannot listen for HTTP"):
            _listen("127.0.0.1", port)
    finally:
        first.close()
