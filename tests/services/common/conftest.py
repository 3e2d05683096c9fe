"""A tiny echo service hosted by ManagedServer, and throwaway TLS certificates."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from services.common import ManagedServer, ServerOptions, Service, errors
from tests.services.common.certs import make_certs

SERVICE = "test.Echo"
ERRORS: dict[bytes, Exception] = {
    b"invalid": errors.InvalidInput("bad value; expected a good one"),
    b"missing": errors.ModelNotFound("no such thing"),
    b"busy": errors.ResourceExhausted("queue full"),
    b"boom": RuntimeError("/secret/internal/detail"),
}


class Echo:
    """Echoes the request; b'sleep:S' sleeps S seconds first; some payloads raise."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = threading.Event()

    def __call__(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        if request in ERRORS:
            raise ERRORS[request]
        if request.startswith(b"sleep:"):
            self.started.set()
            time.sleep(float(request[6:]))
        return request


def echo_service(echo: Echo) -> Service:
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    return Service(SERVICE, lambda server: server.add_generic_rpc_handlers((handler,)))


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def start(echo: Echo) -> Iterator[Callable[..., ManagedServer]]:
    started: list[ManagedServer] = []

    def make(**options: object) -> ManagedServer:
        opts = ServerOptions(host="127.0.0.1", port=0, **options)  # type: ignore[arg-type]
        server = ManagedServer([echo_service(echo)], opts).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(0)


def call(channel: grpc.Channel, payload: bytes, **kwargs: object) -> bytes:
    return channel.unary_unary(f"/{SERVICE}/Echo")(payload, timeout=10, **kwargs)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))
