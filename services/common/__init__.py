"""What every Stride gRPC server shares: lifecycle, health, the call gate, errors, TLS, auth.

Torch-free and Ray-free. How a service uses it::

    from services.common import ManagedServer, ServerOptions, Service, errors
    from services.generated.stride.analysis.v1 import analysis_pb2_grpc as pb_grpc

    class AnalysisServicer(pb_grpc.AnalysisServiceServicer):
        def GetRun(self, request, context):
            run = store.get(request.run_id)   # raise errors.ModelNotFound / InvalidInput ...
            return to_proto(run)              # ... the call gate maps them to status codes

    server = ManagedServer(
        [Service("stride.analysis.v1.AnalysisService",
                 lambda s: pb_grpc.add_AnalysisServiceServicer_to_server(AnalysisServicer(), s))],
        ServerOptions(port=8003, auth_token=None, tls=None, grace_period=10),
        on_stop=[store.close],                 # released after the drain
    )
    server.start()                             # binds; health SERVING for "" and each service
    server.install_signal_handlers()           # SIGTERM/SIGINT: NOT_SERVING, drain, release
    server.wait()                              # returns once stopped; exit 0

- Errors: raise the classes of `services.common.errors` (InvalidInput is a ValueError,
  ModelNotFound a LookupError, NotReady, ResourceExhausted, DeadlineExceeded, ...);
  `services.common.status.STATUS_FOR_ERROR` is the one table of codes. Any other
  exception answers INTERNAL with a generic message and is logged with its traceback.
- Handlers: coroutines and async generators run on the server's event loop, plain
  functions on `handler_threads` threads (services.common.calls has every duty of a call).
- Health: `server.set_health(name, serving)` for names of your own (the inference
  server reports each model by its name). Check and Watch stay open when a token is set,
  answering callers without it for the server as a whole (services.common.health).
- Logs: `configure_json_logging()` writes JSON lines carrying the call's request id
  (`x-request-id` metadata, or a new one, echoed in trailing metadata).
- Options: `ServerOptions` (ports, threads, concurrency cap, message size, grace period,
  `TlsFiles(cert, key, ca)` for TLS / mutual TLS, bearer token, extra health port).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from services.common import errors
from services.common.logs import configure_json_logging, request_id_var

if TYPE_CHECKING:
    from services.common.options import DEFAULT_MAX_MESSAGE_MB, ServerOptions, Service, TlsFiles
    from services.common.server import ManagedServer
    from services.common.status import STATUS_FOR_ERROR, register_error, status_for

# The names that need grpc, by the module that defines them. They are imported on
# first use, so that domain code raising `services.common.errors` (the analysis
# statistics, `stride compare`, `stride --help`) does not import grpc.
_NEED_GRPC = {
    "DEFAULT_MAX_MESSAGE_MB": "options",
    "ManagedServer": "server",
    "ServerOptions": "options",
    "Service": "options",
    "TlsFiles": "options",
    "STATUS_FOR_ERROR": "status",
    "register_error": "status",
    "status_for": "status",
}


def __getattr__(name: str) -> Any:
    module = _NEED_GRPC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"services.common.{module}"), name)


__all__ = [
    "DEFAULT_MAX_MESSAGE_MB",
    "STATUS_FOR_ERROR",
    "ManagedServer",
    "ServerOptions",
    "Service",
    "TlsFiles",
    "configure_json_logging",
    "errors",
    "register_error",
    "request_id_var",
    "status_for",
]
