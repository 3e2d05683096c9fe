"""`stride serve`: the KServe v2 / Triton inference server over a model repository, on
gRPC and HTTP/REST.

Every option also comes from the environment as STRIDE_<OPTION> (STRIDE_REPOSITORY,
STRIDE_PORT, STRIDE_HTTP_PORT, STRIDE_METRICS_PORT, STRIDE_HEALTH_PORT,
STRIDE_AUTH_TOKEN_FILE, ...),
which is how containers configure it. A flag beats its variable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stride.commands._inference_server import build_server, server_options
from stride.commands._paths import local_path
from stride.commands._server import add_stream_arguments, env_default

NAME = "serve"
HELP = "serve a model repository over the KServe v2 / Triton protocol (gRPC and HTTP/REST)"
ORDER = 50


def _on_off(value: str) -> str:
    # A type, not `choices`: argparse checks a string default (from the environment)
    # against its type but not against its choices.
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")
    return value


# services.inference.runtime.SPIN_MODES, named here so that --help imports no ONNX Runtime.
SPIN_MODES = ("off", "run", "on")


MODEL_CONTROL = ("none", "explicit")


def _model_control(value: str) -> str:
    if value not in MODEL_CONTROL:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(MODEL_CONTROL)}, got {value!r}"
        )
    return value


def _grpc_server(value: str) -> str:
    # The threaded server was retired: one gRPC stack, on grpc.aio.
    if value == "threads":
        raise argparse.ArgumentTypeError(
            "'threads' was removed: stride serve has one gRPC server, on grpc.aio (an event "
            "loop for inference, --handler-threads for the other calls); drop the option"
        )
    if value != "asyncio":
        raise argparse.ArgumentTypeError(f"the only value left is asyncio, got {value!r}")
    return value


def _spin_mode(value: str) -> str:
    if value not in SPIN_MODES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SPIN_MODES)}, got {value!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `stride serve` (each with an env default)."""
    add = parser.add_argument
    add(
        "--repository",
        type=local_path,
        default=env_default("repository", "repository"),
        help="model repository folder (env STRIDE_REPOSITORY, default ./repository)",
    )
    add(
        "--host",
        default=env_default("host", "0.0.0.0"),
        help="address to listen on (env STRIDE_HOST)",
    )
    add(
        "--port",
        type=int,
        default=env_default("port", "8001"),
        help="gRPC port (env STRIDE_PORT, default 8001; 0 picks a free one)",
    )
    add(
        "--http-port",
        type=int,
        default=env_default("http-port", "8000"),
        help="HTTP/REST port of the same protocol, with the gRPC port's TLS, token and message "
        "size (env STRIDE_HTTP_PORT, default 8000; 0 picks a free one; -1 disables)",
    )
    add(
        "--http-threads",
        type=int,
        default=env_default("http-threads", "64"),
        help="threads serving REST infer, load and unload calls at once; more wait their turn "
        "(env STRIDE_HTTP_THREADS, default 64)",
    )
    add(
        "--http-body-timeout",
        type=float,
        default=env_default("http-body-timeout", "60"),
        help="seconds a REST request body may take to arrive, all told; past it: 408 "
        "(env STRIDE_HTTP_BODY_TIMEOUT, default 60)",
    )
    add(
        "--http-header-timeout",
        type=float,
        default=env_default("http-header-timeout", "10"),
        help="seconds a REST connection may take to finish its TLS handshake, and to send a "
        "request's headers; past it: closed (408) (env STRIDE_HTTP_HEADER_TIMEOUT, default 10)",
    )
    add(
        "--http-max-connections",
        type=int,
        default=env_default("http-max-connections", "512"),
        help="REST connections kept open at once; more are closed at once "
        "(env STRIDE_HTTP_MAX_CONNECTIONS, default 512)",
    )
    add(
        "--http-max-connections-per-peer",
        type=int,
        default=env_default("http-max-connections-per-peer", "128"),
        help="REST connections kept open at once from one client address "
        "(env STRIDE_HTTP_MAX_CONNECTIONS_PER_PEER, default 128)",
    )
    add(
        "--http-memory-budget-mb",
        type=float,
        default=env_default("http-memory-budget-mb"),
        help="memory REST requests may hold at once: bodies as they arrive, their JSON once "
        "parsed, answers being sent; past it: 429 (env STRIDE_HTTP_MEMORY_BUDGET_MB, default "
        "4 x --max-message-mb, at least 256)",
    )
    add(
        "--http-memory-budget-mb-per-peer",
        type=float,
        default=env_default("http-memory-budget-mb-per-peer"),
        help="the share of it one client address may hold (env "
        "STRIDE_HTTP_MEMORY_BUDGET_MB_PER_PEER, default half of --http-memory-budget-mb)",
    )
    add(
        "--metrics-port",
        type=int,
        default=env_default("metrics-port", "8002"),
        help="Prometheus /metrics HTTP port (env STRIDE_METRICS_PORT, default 8002; -1 disables)",
    )
    add(
        "--health-port",
        type=int,
        default=env_default("health-port"),
        help="extra plaintext port with grpc.health.v1 only, for Kubernetes probes when the "
        "main port uses TLS (env STRIDE_HEALTH_PORT)",
    )
    add(
        "--grace-period",
        type=float,
        default=env_default("grace-period", "10"),
        help="seconds requests in flight get after SIGTERM (env STRIDE_GRACE_PERIOD, default 10)",
    )
    add(
        "--poll-interval",
        type=float,
        default=env_default("poll-interval", "0"),
        help="seconds between repository scans for new, changed or removed versions; 0 turns "
        "polling off (env STRIDE_POLL_INTERVAL)",
    )
    add(
        "--tls-cert",
        type=Path,
        default=env_default("tls-cert"),
        help="PEM certificate (env STRIDE_TLS_CERT)",
    )
    add(
        "--tls-key",
        type=Path,
        default=env_default("tls-key"),
        help="PEM private key (env STRIDE_TLS_KEY)",
    )
    add(
        "--tls-ca",
        type=Path,
        default=env_default("tls-ca"),
        help="PEM CA: clients must present a certificate it signed, i.e. mutual TLS "
        "(env STRIDE_TLS_CA)",
    )
    add(
        "--auth-token-file",
        type=Path,
        default=env_default("auth-token-file"),
        help="file with a bearer token that every call but health must send "
        "(env STRIDE_AUTH_TOKEN_FILE)",
    )
    add(
        "--max-message-mb",
        type=float,
        default=env_default("max-message-mb", "64"),
        help="largest request or response in MB (env STRIDE_MAX_MESSAGE_MB, default 64: a batch "
        "of 64 3x224x224 float32 images)",
    )
    add(
        "--max-concurrent-requests",
        type=int,
        default=env_default("max-concurrent-requests"),
        help="calls in flight beyond this answer RESOURCE_EXHAUSTED (HTTP 429 over REST; "
        "probes aside) (env STRIDE_MAX_CONCURRENT_REQUESTS, default unlimited)",
    )
    add(
        "--threads",
        type=int,
        default=env_default("threads", "0"),
        help="ONNX Runtime intra-op threads per model instance; 0: one per core, divided "
        "among a model's CPU instances when it has several (env STRIDE_THREADS); the gRPC "
        "side is --handler-threads",
    )
    add(
        "--workers",
        type=int,
        default=env_default("workers", "0"),
        help="server processes sharing the gRPC, REST and health ports (Linux: SO_REUSEPORT), "
        "each with its own event loop and ONNX Runtime sessions on its share of the cores; "
        "the limits on connections, memory, calls and threads are divided among them; 0: one "
        "per two cores of the CPU limit (cgroup quota or affinity), at least 1 "
        "(env STRIDE_WORKERS)",
    )
    add(
        "--spin",
        type=_spin_mode,
        metavar="{" + ",".join(SPIN_MODES) + "}",
        default=env_default("spin", "off"),
        help="ONNX Runtime intra-op threads never spin-wait for work (off, the default), "
        "spin while a run lasts and sleep between runs (run: a lower median, a longer tail) "
        "or always spin (on: they hold cores that gRPC and clients need between runs, which "
        "lengthens the tail when cores are few) (env STRIDE_SPIN)",
    )
    add(
        "--grpc-server",
        type=_grpc_server,
        default=env_default("grpc-server"),
        help="deprecated, and ignored: there is one gRPC server, on grpc.aio; 'threads' "
        "was removed (env STRIDE_GRPC_SERVER)",
    )
    add(
        "--handler-threads",
        type=int,
        default=env_default("handler-threads", "128"),
        help="threads that answer the gRPC calls other than inference and probes (metadata, "
        "statistics, load and unload); inference and probes are answered on the event loop "
        "(env STRIDE_HANDLER_THREADS, default 128)",
    )
    add(
        "--model-control",
        type=_model_control,
        metavar="{" + ",".join(MODEL_CONTROL) + "}",
        default=env_default("model-control", "none"),
        help="none (the default): load and unload calls are refused, the server serves what "
        "it finds in the repository (and polls with --poll-interval); explicit: clients with "
        "the token may load and unload models, as Triton's --model-control-mode explicit "
        "(env STRIDE_MODEL_CONTROL)",
    )
    add_stream_arguments(parser)
    add(
        "--max-bytes-elements",
        type=int,
        default=env_default("max-bytes-elements", "1024"),
        help="BYTES elements (encoded images) in one input, refused by the declared count "
        "before any is read (env STRIDE_MAX_BYTES_ELEMENTS, default 1024)",
    )
    add(
        "--max-image-scale",
        type=float,
        default=env_default("max-image-scale", "16"),
        help="an image may be at most this many times the model's input height and width, "
        "in pixels all told, read from its header before decoding "
        "(env STRIDE_MAX_IMAGE_SCALE, default 16)",
    )
    add(
        "--max-decodes",
        type=int,
        default=env_default("max-decodes", "0"),
        help="images being decoded at once across all requests; 0 for one per core "
        "(env STRIDE_MAX_DECODES)",
    )
    add(
        "--metrics-max-connections",
        type=int,
        default=env_default("metrics-max-connections", "8"),
        help="connections the metrics port serves at once; more are closed unanswered "
        "(env STRIDE_METRICS_MAX_CONNECTIONS, default 8)",
    )
    add(
        "--metrics-timeout",
        type=float,
        default=env_default("metrics-timeout", "5"),
        help="seconds a metrics connection may take in all (env STRIDE_METRICS_TIMEOUT, default 5)",
    )
    add(
        "--metrics-tls",
        type=_on_off,
        metavar="{on,off}",
        default=env_default("metrics-tls", "off"),
        help="serve /metrics over the gRPC port's TLS, with client certificates when "
        "--tls-ca is given (env STRIDE_METRICS_TLS, default off: plain HTTP, for a port only "
        "the monitoring namespace may reach)",
    )
    add(
        "--log-format",
        choices=["json", "text"],
        default=env_default("log-format", "json"),
        help="log lines as JSON with request ids, or plain text (env STRIDE_LOG_FORMAT)",
    )


def run(args: argparse.Namespace) -> int:
    """Start the server, serve until SIGTERM/SIGINT, drain, exit 0 (with --workers N > 1:
    N processes under a supervisor, stride.commands._serve_workers)."""
    import logging

    from services.common import configure_json_logging

    if args.log_format == "json":
        configure_json_logging(logging.getLogger().level or "INFO")
    if args.grpc_server is not None:
        logging.getLogger("stride.serve").warning(
            "--grpc-server (STRIDE_GRPC_SERVER) is deprecated and ignored: there is one "
            "gRPC server, on grpc.aio; drop the option"
        )
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.poll_interval < 0:
        raise ValueError(f"--poll-interval must be >= 0, got {args.poll_interval}")
    from stride.commands import _serve_workers

    workers = _serve_workers.worker_count(args.workers)
    if workers > 1:
        return _serve_workers.supervise(args, workers)
    from services.common.server import return_large_allocations_to_the_os

    return_large_allocations_to_the_os()  # requests of many MB must not ratchet the heap up
    server = build_server(args)
    server.start()
    server.install_signal_handlers()
    print(
        f"stride serve: listening on {args.host}:{server.port}"
        + (f", HTTP on :{server.http.port}" if server.http else "")
        + (f", metrics on :{server.metrics.port}/metrics" if server.metrics else "")
        + (" (TLS)" if server.metrics and server.metrics.tls else ""),
        flush=True,
    )
    server.wait()
    return 0


__all__ = ["NAME", "add_arguments", "build_server", "run", "server_options"]
