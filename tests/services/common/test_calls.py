"""The call gate's duties through a real port (issues 24 and 25): generated default methods,
health List and Check, one authorization rule, cancelled calls counted, streams whose
client stops reading, and what a caller without the token can make the server read."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.grpc_attacks import WithheldMessages
from services.common import ManagedServer, ServerOptions, Service
from services.common.auth import BearerToken
from services.common.counters import CallCounters
from services.generated.inference import grpc_service_pb2 as pb
from services.generated.inference import grpc_service_pb2_grpc as pb_grpc
from tests.services.common.conftest import SERVICE, Echo, call, echo_service

SERVING = health_pb2.HealthCheckResponse.SERVING
TOKEN = (("authorization", "Bearer s3cret"),)
TICKS = "test.Ticks"


async def ticks(request: bytes, context: Any) -> AsyncIterator[bytes]:
    """Server-streaming on the loop: a message every 10 ms, for as long as the client reads."""
    for i in range(10_000):
        yield str(i).encode()
        await asyncio.sleep(0.01)


def ticks_service() -> Service:
    handler = grpc.method_handlers_generic_handler(
        TICKS, {"Ticks": grpc.unary_stream_rpc_method_handler(ticks)}
    )
    return Service(TICKS, lambda server: server.add_generic_rpc_handlers((handler,)))


@pytest.fixture
def started() -> Iterator[list[ManagedServer]]:
    servers: list[ManagedServer] = []
    yield servers
    for server in servers:
        server.stop(0)


def serve(started: list[ManagedServer], services: list[Service], **options: Any) -> ManagedServer:
    server = ManagedServer(
        services, ServerOptions(host="127.0.0.1", port=0, **options), counters=CallCounters()
    ).start()
    started.append(server)
    return server


def test_generated_default_methods_answer_unimplemented(started: list[ManagedServer]) -> None:
    # The generated base class implements nothing: its default methods call set_code and
    # raise, which answered INTERNAL ('PoolContext' has no set_code) before.
    base = pb_grpc.GRPCInferenceServiceServicer()
    service = Service(
        "inference.GRPCInferenceService",
        lambda s: pb_grpc.add_GRPCInferenceServiceServicer_to_server(base, s),
    )
    server = serve(started, [service])
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        for attempt in (
            lambda: stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5),
            lambda: list(stub.ModelStreamInfer(iter([pb.ModelInferRequest()]), timeout=5)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                attempt()
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, info.value.details()


def test_health_list_needs_the_token_and_names_every_status(
    started: list[ManagedServer], echo: Echo
) -> None:
    server = serve(started, [echo_service(echo)], auth_token="s3cret")
    server.set_health("digits", False)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.List(health_pb2.HealthListRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = stub.List(health_pb2.HealthListRequest(), timeout=5, metadata=TOKEN).statuses
    assert {name: s.status for name, s in listed.items()} == {
        "": SERVING,
        SERVICE: SERVING,
        "digits": health_pb2.HealthCheckResponse.NOT_SERVING,
    }


def test_health_check_without_the_token_names_nothing(
    started: list[ManagedServer], echo: Echo
) -> None:
    # Check answered SERVING or NOT_FOUND by name to anyone: an oracle of the model names.
    server = serve(started, [echo_service(echo)], auth_token="s3cret")
    server.set_health("digits", True)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)

        def check(name: str, **kwargs: Any) -> Any:
            request = health_pb2.HealthCheckRequest(service=name)
            return stub.Check(request, timeout=5, **kwargs).status

        assert check("digits") == check("no-such-model") == check("") == SERVING
        assert check("digits", metadata=TOKEN) == SERVING
        with pytest.raises(grpc.RpcError) as info:
            check("x" * 10_000, metadata=TOKEN)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "(10000 characters)" in (info.value.details() or "")
        assert len(info.value.details() or "") < 300  # the name is not echoed whole


def test_one_authorization_value_exactly(started: list[ManagedServer], echo: Echo) -> None:
    server = serve(started, [echo_service(echo)], auth_token="s3cret")
    good, bad = TOKEN[0], ("authorization", "Bearer nope")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        assert call(ch, b"x", metadata=(good,)) == b"x"
        for metadata in [(good, bad), (bad, good), (good, good)]:
            with pytest.raises(grpc.RpcError) as info:
                call(ch, b"x", metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "send exactly one" in (info.value.details() or "")
    # The same rule REST applies (the header name in any case).
    token = BearerToken("s3cret")
    assert token.allows([("Authorization", "Bearer s3cret")])
    assert not token.allows([("Authorization", "Bearer s3cret"), ("authorization", "x")])


def test_cancelled_calls_are_counted_as_cancelled(started: list[ManagedServer], echo: Echo) -> None:
    server = serve(started, [echo_service(echo)])
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        future = ch.unary_unary(f"/{SERVICE}/Echo").future(b"sleep:1", timeout=10)
        assert echo.started.wait(5)
        future.cancel()
        assert call(ch, b"x") == b"x"
    assert server.counters is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        outcomes = {key[2]: t.count for key, t in server.counters.snapshot().items()}
        if "CANCELLED" in outcomes:
            break
        time.sleep(0.05)
    assert outcomes == {"CANCELLED": 1, "OK": 1}


def test_a_stream_client_that_stops_reading_leaves_no_unretrieved_task(
    started: list[ManagedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(started, [ticks_service()])
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            for _ in range(5):
                stream = ch.unary_stream(f"/{TICKS}/Ticks")(b"", timeout=10)
                assert next(stream) == b"0"
                stream.cancel()
        deadline = time.monotonic() + 5
        while server.calls.streams.open and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.calls.streams.open == 0
        gc.collect()  # the loop logs an unretrieved exception when the task is collected
        time.sleep(0.2)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_watches_without_the_token_cannot_take_the_work_streams(
    started: list[ManagedServer],
) -> None:
    # 32 health Watch streams without the token took every stream slot, and authenticated
    # streams answered RESOURCE_EXHAUSTED.
    server = serve(started, [ticks_service()], auth_token="s3cret", max_streams=2)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(20)]
        answers: list[Any] = []
        for watch in watches:
            try:
                answers.append(next(watch).status)
            except grpc.RpcError as exc:
                answers.append(exc.code())
        # 16 Watch slots, 4 of them for one address: this client's others are refused.
        assert answers.count(SERVING) == 4
        assert answers.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 16
        streams = [
            ch.unary_stream(f"/{TICKS}/Ticks")(b"", timeout=10, metadata=TOKEN) for _ in range(2)
        ]
        assert [next(s) for s in streams] == [b"0", b"0"]
        for stream in [*watches, *streams]:
            stream.cancel()


def test_a_refused_call_is_answered_before_its_message_is_read(
    started: list[ManagedServer], echo: Echo
) -> None:
    # Streams announce a 1 MB message each and send part of it, without the token: refused
    # from their headers at once (gRPC read the whole message first before, so they were
    # answered only once it was complete, here never).
    server = serve(started, [echo_service(echo)], auth_token="s3cret")
    with WithheldMessages(
        "127.0.0.1", server.port, f"/{SERVICE}/Echo", streams=4, size=1 << 20
    ) as attack:
        attack.push(seconds=0.3)
        deadline = time.monotonic() + 20
        while attack.statuses()["open"] and time.monotonic() < deadline:
            attack.hold(0.1)
        assert attack.statuses() == Counter(UNAUTHENTICATED=4)
    assert echo.calls == 0


def test_an_admitted_message_must_arrive_within_the_receive_timeout(
    started: list[ManagedServer], echo: Echo
) -> None:
    # A client with the token that announces a message and never finishes it held the
    # bytes it had sent for as long as it liked.
    server = serve(started, [echo_service(echo)], auth_token="s3cret", receive_timeout=0.5)
    with WithheldMessages(
        "127.0.0.1", server.port, f"/{SERVICE}/Echo", streams=2, size=1 << 20, metadata=TOKEN
    ) as attack:
        attack.push(seconds=0.3)
        deadline = time.monotonic() + 20
        while attack.statuses()["open"] and time.monotonic() < deadline:
            attack.hold(0.1)
        assert attack.statuses() == Counter(DEADLINE_EXCEEDED=2)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        assert call(ch, b"x", metadata=TOKEN) == b"x"
    assert echo.calls == 1
