"""Probes, streams and unknown methods: the lanes of ManagedServer through a real port.

Each test is the regression test of an attack in issue 15 or 25: idle streams that took
every handler thread (health included), a concurrency cap that refused health, an auth
exemption by prefix, health Watch streams without the token that took the slots of
the work streams.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import ManagedServer, ServerOptions, Service
from tests.services.common.conftest import Echo, call, echo_service

STREAMS = "test.Streams"
SERVING = health_pb2.HealthCheckResponse.SERVING


def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    """Bidi: answers each message (an idle client leaves it waiting on the next one)."""
    yield from requests


def follow(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    """Server-streaming: one message, then nothing until the call ends."""
    ended = threading.Event()
    context.add_callback(ended.set)
    yield b"hello"
    ended.wait(30)


def stream_service() -> Service:
    handler = grpc.method_handlers_generic_handler(
        STREAMS,
        {
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "Follow": grpc.unary_stream_rpc_method_handler(follow),
        },
    )
    return Service(STREAMS, lambda server: server.add_generic_rpc_handlers((handler,)))


@pytest.fixture
def serve(echo: Echo) -> Iterator[Callable[..., ManagedServer]]:
    started: list[ManagedServer] = []

    def make(**options: Any) -> ManagedServer:
        opts = ServerOptions(host="127.0.0.1", port=0, **options)
        server = ManagedServer([echo_service(echo), stream_service()], opts).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(0)


def check(ch: grpc.Channel, timeout: float = 1.0) -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status)


def idle_chat(ch: grpc.Channel) -> tuple[Any, threading.Event]:
    """Open a Chat stream that sends nothing until `release` is set."""
    release = threading.Event()

    def nothing() -> Iterator[bytes]:
        release.wait(30)
        return
        yield b""  # a generator

    return ch.stream_stream(f"/{STREAMS}/Chat")(nothing(), timeout=30), release


def test_health_answers_while_every_handler_thread_is_busy(serve: Any, echo: Echo) -> None:
    server = serve(handler_threads=2)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        busy = [threading.Thread(target=call, args=(ch, b"sleep:1.5")) for _ in range(3)]
        for thread in busy:
            thread.start()
        assert echo.started.wait(5)
        time.sleep(0.1)
        start = time.monotonic()
        assert check(ch, timeout=1.0) == SERVING
        assert time.monotonic() - start < 0.5
        for thread in busy:
            thread.join(10)


def test_concurrency_cap_leaves_health_answering(serve: Any, echo: Echo) -> None:
    server = serve(max_concurrent_requests=1)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        worker = threading.Thread(target=call, args=(ch, b"sleep:0.8"))
        worker.start()
        assert echo.started.wait(5)
        with pytest.raises(grpc.RpcError) as info:
            call(ch, b"x")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-concurrent-requests" in (info.value.details() or "")
        assert check(ch) == SERVING  # gRPC's own cap counted health and refused it
        worker.join(10)


def test_streams_past_the_limit_are_refused_and_the_rest_keep_serving(serve: Any) -> None:
    # 1 MB messages: a request stream holds a message's worth of the memory budget, and with
    # 64 MB ones the default budget has room for two (services.common.budget).
    server = serve(handler_threads=2, max_streams=3, max_message_mb=1)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        opened = [idle_chat(ch) for _ in range(3)]
        follow_call = None
        try:
            deadline = time.monotonic() + 5
            while server.calls.streams.open < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.calls.streams.open == 3
            # Started only now: started with the chats, it could take a slot before the
            # third chat did (and was served, one test run in two).
            follow_call = ch.unary_stream(f"/{STREAMS}/Follow")(b"", timeout=30)
            with pytest.raises(grpc.RpcError) as info:
                next(follow_call)  # a fourth stream, of another kind
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-streams" in (info.value.details() or "")
            for _ in range(4):  # more unary calls than handler threads, one after another
                assert call(ch, b"still here") == b"still here"
            assert check(ch) == SERVING
        finally:
            for stream, release in opened:
                release.set()
                stream.cancel()
            if follow_call is not None:
                follow_call.cancel()


def test_idle_streams_end_with_a_reason_and_busy_ones_stay(serve: Any) -> None:
    server = serve(max_streams=4, stream_idle_timeout=0.5)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        idle, release = idle_chat(ch)
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == SERVING

        def busy() -> Iterator[bytes]:
            for _ in range(8):  # 1.6 s of messages, each well inside the idle timeout
                time.sleep(0.2)
                yield b"ping"

        answers = list(ch.stream_stream(f"/{STREAMS}/Chat")(busy(), timeout=30))
        assert answers == [b"ping"] * 8
        for stream in (idle, watch):
            with pytest.raises(grpc.RpcError) as info:
                list(stream)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "idle" in (info.value.details() or "")
        release.set()
        assert server.calls.ended_idle == 2
        assert server.calls.streams.open == 0


def test_health_port_watch_streams_cannot_take_its_check_threads(serve: Any) -> None:
    # 8 Watch slots, a quarter of them (2) for one address: this client's third is refused.
    server = serve(health_port=0, max_health_watches=8)
    with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as hc:
        stub = health_pb2_grpc.HealthStub(hc)
        watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(6)]
        statuses = []
        for watch in watches:
            try:
                statuses.append(next(watch).status)
            except grpc.RpcError as exc:
                statuses.append(exc.code())
        assert statuses.count(SERVING) == 2
        assert statuses.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
        assert check(hc) == SERVING
        for watch in watches:
            watch.cancel()


def test_auth_exemption_is_by_exact_method_name(echo: Echo) -> None:
    # A method under the health service's name that is not health's own must need the token.
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Secret": grpc.unary_unary_rpc_method_handler(echo)}
    )
    extra = Service("extra", lambda server: server.add_generic_rpc_handlers((handler,)))
    options = ServerOptions(host="127.0.0.1", port=0, auth_token="s3cret", reflection=False)
    server = ManagedServer([echo_service(echo), extra], options).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            with pytest.raises(grpc.RpcError) as info:
                ch.unary_unary("/grpc.health.v1.Health/Secret")(b"x", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert check(ch) == SERVING
            # Health/List names every service (every model): it needs the token too.
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            with pytest.raises(grpc.RpcError) as info:
                health_pb2_grpc.HealthStub(ch).List(health_pb2.HealthListRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(0)


def test_a_failed_start_releases_the_port_it_had_bound(echo: Echo) -> None:
    blocker = ManagedServer([echo_service(echo)], ServerOptions(host="127.0.0.1", port=0)).start()
    try:
        failing = ManagedServer(
            [echo_service(echo)],
            ServerOptions(host="127.0.0.1", port=0, health_port=blocker.port),
        )
        with pytest.raises(OSError, match="cannot listen"):
            failing.start()
        main_port = failing.port
        again = ManagedServer(
            [echo_service(echo)], ServerOptions(host="127.0.0.1", port=main_port)
        ).start()
        again.stop(0)
    finally:
        blocker.stop(0)
