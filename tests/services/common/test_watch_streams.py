"""Stream handlers that write as they go, such as health Watch: each write counts as
activity for the idle timeout, and a stream that neither reads nor writes for the
timeout ends with a reason."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import ManagedServer, ServerOptions

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
IDLE_S = 0.6


@pytest.fixture
def server() -> Iterator[ManagedServer]:
    options = ServerOptions(host="127.0.0.1", port=0, stream_idle_timeout=IDLE_S)
    started = ManagedServer([], options).start()
    yield started
    started.stop(0)


def test_a_watch_that_writes_outlives_the_idle_timeout_then_ends_idle(
    server: ManagedServer,
) -> None:
    seen: list[int] = []
    ended: list[BaseException] = []

    def follow() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(
                health_pb2.HealthCheckRequest(), timeout=30
            )
            try:
                for response in watch:
                    seen.append(response.status)
            except grpc.RpcError as exc:
                ended.append(exc)

    reader = threading.Thread(target=follow)
    reader.start()
    start = time.monotonic()
    serving = True
    while time.monotonic() - start < 3 * IDLE_S:  # a change every third of the timeout
        time.sleep(IDLE_S / 3)
        serving = not serving
        server.set_health("", serving)
    assert not ended, "a Watch that was written to was ended as idle"
    assert reader.is_alive()
    quiet = time.monotonic()
    reader.join(10)
    assert not reader.is_alive()
    assert time.monotonic() - quiet >= IDLE_S * 0.8  # ended by the timeout, after the quiet
    assert len(seen) >= 6 and set(seen) == {SERVING, NOT_SERVING}
    [error] = ended
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "idle" in (error.details() or "")
    assert server.calls.ended_idle == 1
