"""grpc.health.v1 on the server's event loop: Check, Watch and List.

A status per name: "" is the server as a whole, then each service and whatever the
services add (the inference server names each model). Check and Watch are open to
callers without the bearer token, but such a caller is never told about a name: the
server does not read its request (see services.common.calls) and answers for the
server as a whole. So the name a probe asks for costs no memory and learns nothing
(Check used to answer SERVING or NOT_FOUND by model name to anyone: an oracle of the
model names). Callers with the token get the status of the name they ask for, and
List, which needs the token, names them all.

The status is kept per name in a dict; a change wakes every Watch, each of which
sends its name's status when it differs from what it sent last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import ModelNotFound, shown

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
HEALTH_SERVICE = "grpc.health.v1.Health"


class HealthService(health_pb2_grpc.HealthServicer):
    """Health statuses by name; call `set` and `enter_graceful_shutdown` on the loop."""

    def __init__(self) -> None:
        self._status: dict[str, int] = {"": SERVING}
        self._changed = asyncio.Event()
        self._draining = False

    def status(self, name: str) -> int | None:
        return self._status.get(name)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def set(self, name: str, status: int) -> None:
        """Report `name` SERVING or NOT_SERVING (ignored once the server drains)."""
        if self._draining or self._status.get(name) == status:
            return
        self._status[name] = status
        self._wake()

    async def enter_graceful_shutdown(self) -> None:
        """Every name NOT_SERVING from now on, whatever `set` says later."""
        self._draining = True
        for name in self._status:
            self._status[name] = NOT_SERVING
        self._wake()

    async def Check(
        self, request: health_pb2.HealthCheckRequest | None, context: Any
    ) -> health_pb2.HealthCheckResponse:
        name = "" if request is None else request.service
        status = self._status.get(name)
        if status is None:
            raise ModelNotFound(f"no health status for service {shown(name)}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest | None, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        name = "" if request is None else request.service
        last = None
        while True:
            changed = self._changed
            status = self._status.get(name, SERVICE_UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await changed.wait()

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for name, status in sorted(self._status.items()):
            response.statuses[name].status = status
        return response
