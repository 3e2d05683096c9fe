"""ManagedServer through a real port: errors, auth, request ids, health, drain, limits, TLS."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import ManagedServer, ServerOptions, TlsFiles
from services.common.logs import JsonFormatter, RequestIdFilter, request_id_var
from tests.services.common.conftest import SERVICE, Echo, call

Start = Callable[..., ManagedServer]


def channel(server: ManagedServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.port}")


def health(ch: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


@pytest.mark.parametrize(
    ("payload", "code", "text"),
    [
        (b"invalid", grpc.StatusCode.INVALID_ARGUMENT, "bad value; expected a good one"),
        (b"missing", grpc.StatusCode.NOT_FOUND, "no such thing"),
        (b"busy", grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full"),
    ],
)
def test_domain_errors_reach_the_client(
    start: Start, payload: bytes, code: object, text: str
) -> None:
    with channel(start()) as ch, pytest.raises(grpc.RpcError) as info:
        call(ch, payload)
    assert info.value.code() == code
    assert info.value.details() == text


def test_unexpected_error_is_internal_logged_and_the_server_keeps_serving(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    with channel(start()) as ch:
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as info:
            call(ch, b"boom")
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "/secret" not in info.value.details()
        assert "request id" in info.value.details()
        assert any(
            "/secret/internal/detail" in r.getMessage() or r.exc_info for r in caplog.records
        )
        assert call(ch, b"still here") == b"still here"


def test_request_id_is_echoed_or_made_up(start: Start) -> None:
    with channel(start()) as ch:
        method = ch.unary_unary(f"/{SERVICE}/Echo")
        _, given = method.with_call(b"x", metadata=(("x-request-id", "abc-123"),), timeout=5)
        _, made = method.with_call(b"x", timeout=5)
    assert dict(given.trailing_metadata())["x-request-id"] == "abc-123"
    assert len(dict(made.trailing_metadata())["x-request-id"]) == 16


def test_bearer_token_guards_everything_but_health(start: Start) -> None:
    server = start(auth_token="s3cret")
    with channel(server) as ch:
        for metadata, word in [((), "missing"), ((("authorization", "Bearer nope"),), "invalid")]:
            with pytest.raises(grpc.RpcError) as info:
                call(ch, b"x", metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert word in info.value.details() and "Bearer" in info.value.details()
        assert call(ch, b"x", metadata=(("authorization", "Bearer s3cret"),)) == b"x"
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING


def test_health_names_and_extra_health_port(start: Start) -> None:
    server = start(health_port=0)
    assert server.health_port
    with channel(server) as ch, grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as hc:
        assert health(ch, SERVICE) == health_pb2.HealthCheckResponse.SERVING
        server.set_health("some-model", False)
        assert health(ch, "some-model") == health_pb2.HealthCheckResponse.NOT_SERVING
        # The health port reads no request: it answers for the server, whatever the name.
        assert health(hc, "some-model") == health_pb2.HealthCheckResponse.SERVING
        assert health(hc, "no-such-service") == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            call(hc, b"x")  # the health port serves health only
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_stop_drains_calls_in_flight_then_releases(echo: Echo) -> None:
    from tests.services.common.conftest import echo_service

    released: list[float] = []
    server = ManagedServer(
        [echo_service(echo)],
        ServerOptions(host="127.0.0.1", port=0, grace_period=5),
        on_stop=[lambda: released.append(time.monotonic())],
    ).start()
    result: dict[str, object] = {}
    with channel(server) as ch:

        def slow() -> None:
            result["value"] = call(ch, b"sleep:0.5")

        worker = threading.Thread(target=slow)
        worker.start()
        assert echo.started.wait(5)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        time.sleep(0.1)
        assert server.stopping
        worker.join(10)
        stopper.join(10)
    assert result["value"] == b"sleep:0.5"
    assert released and server.wait(0)


def test_health_reports_not_serving_while_draining(echo: Echo) -> None:
    from tests.services.common.conftest import echo_service

    server = ManagedServer(
        [echo_service(echo)], ServerOptions(host="127.0.0.1", port=0, health_port=0)
    ).start()
    with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as hc, channel(server) as ch:
        worker = threading.Thread(target=lambda: call(ch, b"sleep:0.6"))
        worker.start()
        assert echo.started.wait(5)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        time.sleep(0.2)
        assert health(hc) == health_pb2.HealthCheckResponse.NOT_SERVING
        worker.join(10)
        stopper.join(10)


def test_concurrency_cap_answers_resource_exhausted(start: Start, echo: Echo) -> None:
    server = start(max_concurrent_requests=1)
    with channel(server) as ch:
        worker = threading.Thread(target=lambda: call(ch, b"sleep:0.5"))
        worker.start()
        assert echo.started.wait(5)
        with pytest.raises(grpc.RpcError) as info:
            call(ch, b"x")
        worker.join(10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_message_size_limit(start: Start) -> None:
    server = start(max_message_mb=0.01)
    with channel(server) as ch:
        assert call(ch, b"a" * 1000) == b"a" * 1000
        with pytest.raises(grpc.RpcError) as info:
            call(ch, b"a" * 20_000)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_default_message_limit_fits_64_images_of_224() -> None:
    assert ServerOptions().max_message_mb * 1024 * 1024 > 64 * 3 * 224 * 224 * 4 + 4096


@pytest.mark.parametrize(
    "bad",
    [
        {"handler_threads": 0},
        {"max_streams": 0},
        {"stream_idle_timeout": 0},
        {"max_concurrent_requests": 0},
        {"max_message_mb": 0},
        {"auth_token": " "},
    ],
)
def test_bad_options_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerOptions(**bad)  # type: ignore[arg-type]


def test_busy_port_is_an_os_error(start: Start, echo: Echo) -> None:
    from tests.services.common.conftest import echo_service

    first = start()
    with pytest.raises(OSError, match="cannot listen"):
        ManagedServer(
            [echo_service(echo)], ServerOptions(host="127.0.0.1", port=first.port)
        ).start()


def test_tls_and_mutual_tls(start: Start, certs: dict[str, Path]) -> None:
    ca = certs["ca.pem"].read_bytes()
    tls = start(tls=TlsFiles(certs["server.pem"], certs["server.key"]))
    with grpc.secure_channel(f"127.0.0.1:{tls.port}", grpc.ssl_channel_credentials(ca)) as ch:
        assert call(ch, b"tls") == b"tls"
    with channel(tls) as plain, pytest.raises(grpc.RpcError):
        call(plain, b"x")  # plaintext against a TLS port fails

    mtls = start(tls=TlsFiles(certs["server.pem"], certs["server.key"], certs["ca.pem"]))
    client = grpc.ssl_channel_credentials(
        ca, certs["client.key"].read_bytes(), certs["client.pem"].read_bytes()
    )
    with grpc.secure_channel(f"127.0.0.1:{mtls.port}", client) as ch:
        assert call(ch, b"mtls") == b"mtls"
    anonymous = grpc.ssl_channel_credentials(ca)
    with (
        grpc.secure_channel(f"127.0.0.1:{mtls.port}", anonymous) as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        call(ch, b"x")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("x", logging.INFO, "f.py", 1, "hello %s", ("there",), None)
    record.method = "/a/B"
    token = request_id_var.set("rid-9")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello there"
    assert entry["request_id"] == "rid-9"
    assert entry["method"] == "/a/B"
    assert entry["level"] == "INFO"
