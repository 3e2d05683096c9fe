"""The REST front end's app: the Open Inference Protocol's HTTP/REST endpoints on Starlette,
over the same `InferenceCore` as gRPC.

    GET  /v2/health/live | /v2/health/ready        {"live": true} / {"ready": true}; 400 when not
    GET  /v2                                        server metadata
    GET  /v2/models/{m}[/versions/{v}]              model metadata
    GET  .../ready | .../config | .../stats         {"name": m, "ready": true}, config, statistics
    POST .../infer                                  JSON tensors or binary tensor data
    GET  /v2/models/stats                           every model's statistics
    POST /v2/repository/index                       {"ready": bool} optional
    POST /v2/repository/models/{m}/load | unload
    shared memory, trace and logging settings       503 "the server does not support ...", as
                                                    Triton's HTTP server answers for what it lacks

Every call passes through `RestApp.serve`: request id, --max-concurrent-requests, the
bearer token, the method, the error mapping (services.common.status; errors answer
{"error": message}), the counters. A body is read on the event loop, counted against
the memory budget as its bytes arrive together with what its JSON will cost once
parsed (services.inference.rest_body, rest_budget). An infer request whose JSON and
answer are small (the common case: tensors as binary data, or a few thousand values)
is decoded and answered on the loop, its model run awaited from the dynamic batcher as
over gRPC; larger JSON, compressed bodies, images to decode, load and unload go to a
bounded thread pool, so that JSON never stalls the loop's other calls and a parsed body
never waits for a thread (it waits as bytes, counted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection
from concurrent import futures
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from services.common.auth import BearerToken, authorization_values
from services.common.counters import CallCounters
from services.common.errors import ResourceExhausted
from services.common.logs import request_id_var
from services.common.status import http_status_for
from services.inference import rest
from services.inference.core import InferenceCore
from services.inference.rest_body import (
    Reply,
    check_json_size,
    encoding,
    header,
    headers,
    plain,
    read_body,
)
from services.inference.rest_budget import Held, MemoryBudget, TooCostly
from services.inference.tensors import BYTES, InferRequest, InferResult

log = logging.getLogger("stride.inference.http")

JSON = "application/json"
OCTETS = "application/octet-stream"
# Work below this many bytes (a body's JSON as it will cost parsed, an answer as it will
# cost encoded) is done on the event loop: it takes less than handing it to a thread.
INLINE_COST = 1 << 20
# Triton's extensions Stride does not implement, answered as Triton's HTTP server answers
# for what a build of it lacks (503, "the server does not support ...").
UNSUPPORTED = {
    "shared_memory": "system shared memory",
    "cuda_shared_memory": "CUDA shared memory",
    "trace": "tracing",
    "logging": "dynamic logging",
}


class AppOptions(Protocol):
    """What the app reads of the REST port's options (rest_server.HttpOptions)."""

    @property
    def threads(self) -> int: ...
    @property
    def max_message_mb(self) -> float: ...
    @property
    def memory_budget_mb(self) -> float: ...
    @property
    def memory_budget_mb_per_peer(self) -> float: ...
    @property
    def auth_token(self) -> str | None: ...
    @property
    def max_concurrent(self) -> int | None: ...
    @property
    def body_timeout(self) -> float: ...


Handler = Callable[[Request, Held], Awaitable[Response]]


class Endpoint:
    """One call of the protocol as an ASGI app: `RestApp.serve` around its handler."""

    def __init__(
        self,
        app: RestApp,
        name: str,  # for the counters: a fixed set, whatever the path
        handler: Handler,
        methods: Collection[str] | None,
        *,
        probe: bool = False,  # health: no token, never counted against --max-concurrent
    ) -> None:
        self.app = app
        self.name = name
        self.handler = handler
        self.methods = methods
        self.probe = probe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app.serve(self, Request(scope, receive), send)


def _json(status: int, value: Any) -> Response:
    return Response(json.dumps(value, separators=(",", ":")), status, media_type=JSON)


class RestApp:
    """The Starlette router of every endpoint, and the duties every call shares."""

    def __init__(
        self,
        core: InferenceCore,
        options: AppOptions,
        counters: CallCounters | None = None,
    ) -> None:
        self.core = core
        self.options = options
        self.counters = counters
        self._token = BearerToken(options.auth_token) if options.auth_token else None
        self._max_body = int(options.max_message_mb * 1024 * 1024)
        self.budget = MemoryBudget(
            int(options.memory_budget_mb * 1024 * 1024),
            int(options.memory_budget_mb_per_peer * 1024 * 1024),
        )
        self._in_flight = 0  # calls being answered, probes aside (the event loop only)
        self.pool = futures.ThreadPoolExecutor(options.threads, thread_name_prefix="http-work")
        self.router = Router(self._routes(), redirect_slashes=False, default=self._not_found())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.router(scope, receive, send)

    def _routes(self) -> list[Route]:
        def route(
            path: str, name: str, handler: Handler, *methods: str, probe: bool = False
        ) -> Route:
            return Route(path, Endpoint(self, name, handler, methods, probe=probe))

        model = "/v2/models/{name}"
        version = model + "/versions/{version:int}"
        routes = [route(f"{m}/infer", "infer", self._infer, "POST") for m in (model, version)]
        routes += [
            route("/v2/health/live", "live", self._live, "GET", probe=True),
            route("/v2/health/ready", "ready", self._ready, "GET", probe=True),
            route("/v2", "metadata", self._server_metadata, "GET"),
            route("/v2/models/stats", "stats", self._statistics, "GET"),
        ]
        for base in (model, version):
            routes += [
                route(base, "model_metadata", self._model_metadata, "GET"),
                route(f"{base}/ready", "model_ready", self._model_ready, "GET"),
                route(f"{base}/config", "config", self._config, "GET"),
                route(f"{base}/stats", "stats", self._statistics, "GET"),
            ]
        for repo in ("/v2/repository", "/v2/repository/{repository}"):
            routes += [
                route(f"{repo}/index", "index", self._index, "POST"),
                route(f"{repo}/models/{{name}}/load", "load", self._load, "POST"),
                route(f"{repo}/models/{{name}}/unload", "unload", self._unload, "POST"),
            ]
        for kind, path in (("shared_memory", "systemsharedmemory"), ("cuda_shared_memory",
                           "cudasharedmemory")):  # fmt: skip
            for region in ("", "/region/{region}"):
                routes.append(route(f"/v2/{path}{region}/status", kind, self._unsupported, "GET"))
                for action in ("register", "unregister"):
                    routes.append(
                        route(f"/v2/{path}{region}/{action}", kind, self._unsupported, "POST")
                    )
        for path in ("/v2/trace/setting", model + "/trace/setting"):
            routes.append(route(path, "trace", self._unsupported, "GET", "POST"))
        routes.append(route("/v2/logging", "logging", self._unsupported, "GET", "POST"))
        return routes

    def _not_found(self) -> Endpoint:
        async def not_found(request: Request, held: Held) -> Response:
            raise Reply(404, "Not Found")

        return Endpoint(self, "other", not_found, None)

    # What every call goes through --------------------------------------------------

    async def serve(self, endpoint: Endpoint, request: Request, send: Send) -> None:
        """Answer one call: request id, admission, token, method, the handler, errors,
        counters; the call's memory reservations are released once it is answered."""
        start = time.perf_counter_ns()
        scope = request.scope
        rid = header(request, b"x-request-id")[:64] or os.urandom(8).hex()
        token = request_id_var.set(rid)
        client = scope.get("client")
        held = Held(self.budget, str(client[0]) if client else "")
        admitted = False
        status = 500
        try:
            try:
                admitted = self._admit(endpoint.probe)
                if not endpoint.probe:
                    self._authorize(request)
                if endpoint.methods is not None and request.method not in endpoint.methods:
                    raise Reply(405, "Method Not Allowed")
                response = await endpoint.handler(request, held)
            except Exception as exc:
                response = self._error(exc, rid, scope["path"])
            finally:
                if admitted:
                    self._in_flight -= 1
            status = response.status_code
            response.raw_headers.append((b"x-request-id", rid.encode("latin-1")))
            await response(scope, request.receive, send)
        finally:
            held.release()
            request_id_var.reset(token)
            if self.counters is not None:
                ns = time.perf_counter_ns() - start
                self.counters.record("http", endpoint.name, str(status), ns)

    def _admit(self, probe: bool) -> bool:
        """Count a call in flight (True), or refuse it past `max_concurrent`; probes are
        neither counted nor refused."""
        limit = self.options.max_concurrent
        if limit is None or probe:
            return False
        if self._in_flight >= limit:
            raise ResourceExhausted(
                f"{limit} calls are in flight, the most this server serves at once "
                "(--max-concurrent-requests); try again later"
            )
        self._in_flight += 1
        return True

    def _authorize(self, request: Request) -> None:
        # The rule gRPC follows too (services.common.auth): exactly one Authorization
        # header, `Bearer <token>`; several are refused, whichever of them is right.
        if self._token is None:
            return
        refusal = self._token.refusal(authorization_values(request.scope["headers"]))
        if refusal is not None:
            raise Reply(401, refusal.replace("'authorization:", "header 'Authorization:"))

    def _error(self, exc: Exception, rid: str, path: str) -> Response:
        if isinstance(exc, Reply):
            status, message = exc.status, str(exc)
        elif isinstance(exc, TooCostly):
            status, message = 413, str(exc)
        else:
            status, message, expected = http_status_for(exc, rid)
            if expected:
                log.info("%s failed: %d %s", path, status, message)
            else:
                log.error("%s raised an unexpected error", path, exc_info=exc)
        response = Response(json.dumps({"error": message}), status, media_type=JSON)
        if status == 401:
            response.headers["www-authenticate"] = "Bearer"
        return response

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _body(
        self, request: Request, held: Held, json_part: int | None = None
    ) -> tuple[bytearray, int]:
        timeout = self.options.body_timeout
        return await read_body(
            request, held, max_bytes=self._max_body, timeout=timeout, json_part=json_part
        )

    def _plain(
        self, body: bytearray, coding: str, held: Held, json_part: int | None = None
    ) -> bytearray:
        return plain(body, coding, held, max_bytes=self._max_body, json_part=json_part)

    # Health and metadata: answered on the event loop ---------------------------------

    async def _live(self, request: Request, held: Held) -> Response:
        if self.core.live():
            return _json(200, {"live": True})
        return _json(400, {"live": False, "error": "the server is not live"})

    async def _ready(self, request: Request, held: Held) -> Response:
        if self.core.ready():
            return _json(200, {"ready": True})
        return _json(400, {"ready": False, "error": "the server is not ready"})

    async def _server_metadata(self, request: Request, held: Held) -> Response:
        return _json(200, rest.server_metadata(self.core.server_metadata()))

    async def _model_metadata(self, request: Request, held: Held) -> Response:
        name, version = _model(request)
        return _json(200, rest.model_metadata(self.core.model_metadata(name, version)))

    async def _model_ready(self, request: Request, held: Held) -> Response:
        name, version = _model(request)
        if self.core.model_ready(name, version):
            return _json(200, {"name": name, "ready": True})
        return _json(400, {"name": name, "ready": False, "error": "Model version not ready"})

    async def _config(self, request: Request, held: Held) -> Response:
        name, version = _model(request)
        return _json(200, rest.model_config(self.core.model_config(name, version)))

    async def _statistics(self, request: Request, held: Held) -> Response:
        name, version = _model(request) if "name" in request.path_params else ("", "")
        if self.core.cluster is not None:  # the sum over the server's processes: a wait
            entries = await self._run(self.core.statistics, name, version)
        else:
            entries = self.core.statistics(name, version)
        return _json(200, rest.statistics(entries))

    async def _unsupported(self, request: Request, held: Held) -> Response:
        raise Reply(
            503, f"the server does not support {UNSUPPORTED[request.scope['endpoint'].name]}"
        )

    # The repository: parsed and run on the thread pool -------------------------------

    async def _index(self, request: Request, held: Held) -> Response:
        body, _ = await self._body(request, held)
        entries = await self._run(self._index_sync, body, encoding(request), held)
        return _json(200, entries)

    def _index_sync(self, body: bytearray, coding: str, held: Held) -> list[dict[str, str]]:
        ready = rest.parse_json_object(self._plain(body, coding, held)).get("ready", False)
        if not isinstance(ready, bool):
            raise Reply(400, "Invalid value for 'ready': expected a boolean")
        return rest.index(self.core.index(ready))

    async def _load(self, request: Request, held: Held) -> Response:
        return await self._control(request, held, self.core.load)

    async def _unload(self, request: Request, held: Held) -> Response:
        return await self._control(request, held, self.core.unload)

    async def _control(
        self, request: Request, held: Held, call: Callable[[str, list[str]], None]
    ) -> Response:
        body, _ = await self._body(request, held)
        name, coding = request.path_params["name"], encoding(request)

        def run() -> None:
            params = rest.parse_json_object(self._plain(body, coding, held)).get("parameters")
            if not isinstance(params or {}, dict):
                raise Reply(400, "'parameters' must be a JSON object")
            call(name, list(params or {}))

        await self._run(run)
        return Response(b"", 200)

    # Inference ------------------------------------------------------------------

    async def _infer(self, request: Request, held: Held) -> Response:
        """Decode, run and encode an infer request: on the event loop when its JSON and its
        answer are small (less work than a hand-over to a thread), else on the thread pool;
        the model's run is awaited from the dynamic batcher either way (BYTES inputs, images
        decoded by the model, run on the pool)."""
        name, version = _model(request)
        length = headers(request).get(b"inference-header-content-length")
        json_part = int(length) if length is not None and length.isdigit() else None
        if json_part is not None:
            check_json_size(json_part)
        body, parsed = await self._body(request, held, json_part)
        header_length = None if length is None else length.decode("latin-1")
        args = (name, version, body, header_length, encoding(request), held)
        if args[4] == "identity" and parsed <= INLINE_COST:
            decoded = self._decode(*args)
        else:
            decoded = await self._run(self._decode, *args)
        del body
        infer_request, chosen, default = decoded
        # The request's `timeout` parameter applies as the model's queue policy allows (there
        # is no call deadline over HTTP).
        if any(tensor.datatype == BYTES for tensor in infer_request.inputs):
            result = await self._run(self.core.infer, infer_request, None)
        else:
            result = await self.core.infer_async(infer_request, None)
        del infer_request, decoded
        # The request's body and JSON are gone now; what is held from here is the answer.
        held.release()
        cost = _answer_cost(result, chosen, default)
        held.reserve(cost)
        if cost <= INLINE_COST:
            return _answer(result, chosen, default)
        response: Response = await self._run(_answer, result, chosen, default)
        return response

    def _decode(
        self, name: str, version: str, body: bytearray, length: str | None, coding: str,
        held: Held,
    ) -> tuple[InferRequest, set[str] | None, bool]:  # fmt: skip
        """The request (its arrays), the outputs asked for as binary data (None: all as the
        default says) and that default."""
        json_part = int(length) if length is not None and length.isdigit() else None
        body = self._plain(body, coding, held, json_part)
        header, binary = rest.parse_header(body, length)
        request, default = rest.request_from_json(
            name, version, header, binary, self.core.max_bytes_elements, self.core.counters
        )
        chosen = rest.binary_outputs(header, default) if "outputs" in header else None
        return request, chosen, default

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _answer(result: InferResult, chosen: set[str] | None, default: bool) -> Response:
    text, chunks = rest.response_to_json(result, chosen, default)
    if not chunks:
        return Response(text, 200, media_type=JSON)
    headers = {rest.HEADER_LENGTH: str(len(text))}
    return Response(b"".join([text, *chunks]), 200, headers, media_type=OCTETS)


def _answer_cost(result: InferResult, chosen: set[str] | None, default: bool) -> int:
    """An upper bound of what encoding `result` takes beyond the outputs themselves (the
    model's, like ONNX Runtime's working memory, not counted): for an output answered as
    JSON, a Python object, a list slot and its text per element; as binary data, its
    bytes once (read in place, joined into the answer), twice for BYTES."""
    # The id is echoed: its text and the bytes encoded from it (\uXXXX escapes if not ASCII).
    cost = 1024 + len(result.id) * (2 if result.id.isascii() else 12)
    for out in result.outputs:
        as_binary = default if chosen is None else out.name in chosen
        if isinstance(out.data, list):
            size = sum(len(item) for item in out.data) + 4 * len(out.data)
            cost += 2 * size if as_binary else 64 * len(out.data) + 3 * size
        else:
            cost += out.data.nbytes if as_binary else 64 * out.data.size
    return cost


def _model(request: Request) -> tuple[str, str]:
    params = request.path_params
    version = params.get("version")
    return params["name"], "" if version is None else str(version)
