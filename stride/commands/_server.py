"""What `stride serve` and `stride serve-analysis` share: env defaults, TLS and token,
the limits on streaming calls.

The leading underscore keeps this module out of the subcommand list (stride.cli).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def env_default(option: str, default: str | None = None) -> str | None:
    """The default of --option from STRIDE_OPTION (dashes become underscores).

    argparse applies the option's `type` to a string default, so a bad value in the
    environment is reported like a bad flag.
    """
    return os.environ.get("STRIDE_" + option.upper().replace("-", "_"), default)


def tls_and_token(args: argparse.Namespace) -> tuple[Any, str | None]:
    """(TlsFiles or None, bearer token or None) from --tls-* and --auth-token-file.

    The files are read now, so a missing or empty one is a clear start-up error.
    """
    from services.common import TlsFiles  # grpc: only when serving

    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key), args.tls_ca and Path(args.tls_ca))
        tls.credentials()
    elif args.tls_ca:
        raise ValueError("--tls-ca needs --tls-cert and --tls-key")
    token = None
    if args.auth_token_file:
        token = Path(args.auth_token_file).read_text().strip()
        if not token:
            raise ValueError(f"auth token file {args.auth_token_file} is empty")
    return tls, token


def add_stream_arguments(parser: argparse.ArgumentParser, idle_default: str = "300") -> None:
    """--max-streams, --max-health-watches, --max-connections, the gRPC memory budget and
    the receive, handshake and stream idle timeouts (services.common.calls,
    services.common.budget and services.common.options have the reasons)."""
    parser.add_argument(
        "--max-streams",
        type=int,
        default=env_default("max-streams", "32"),
        help="streaming calls open at once (ModelStreamInfer, WatchRun, reflection); more "
        "are refused with RESOURCE_EXHAUSTED (env STRIDE_MAX_STREAMS, default 32)",
    )
    parser.add_argument(
        "--max-health-watches",
        type=int,
        default=env_default("max-health-watches", "16"),
        help="health Watch streams open at once, apart from --max-streams so that watchers "
        "(who need no token) cannot take the slots of the work; one client address may hold "
        "a quarter of them (env STRIDE_MAX_HEALTH_WATCHES, default 16)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=env_default("max-connections", "512"),
        help="gRPC connections at once; more are refused when they connect "
        "(env STRIDE_MAX_CONNECTIONS, default 512)",
    )
    parser.add_argument(
        "--grpc-memory-budget-mb",
        type=float,
        default=env_default("grpc-memory-budget-mb"),
        help="memory admitted gRPC requests may hold at once: a read counts the largest "
        "message until it is in, then the request at what it costs parsed; a read that does "
        "not fit waits (within --receive-timeout), a request stream that does not fit is "
        "refused (env STRIDE_GRPC_MEMORY_BUDGET_MB, default 4 x the largest request, at "
        "least 256)",
    )
    parser.add_argument(
        "--grpc-memory-budget-mb-per-peer",
        type=float,
        default=env_default("grpc-memory-budget-mb-per-peer"),
        help="the share of it one client address may hold (env "
        "STRIDE_GRPC_MEMORY_BUDGET_MB_PER_PEER, default half of --grpc-memory-budget-mb)",
    )
    parser.add_argument(
        "--receive-timeout",
        type=float,
        default=env_default("receive-timeout", "60"),
        help="seconds a gRPC request message may take to arrive once its call is admitted; "
        "past it DEADLINE_EXCEEDED (env STRIDE_RECEIVE_TIMEOUT, default 60)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=env_default("handshake-timeout", "10"),
        help="seconds a new gRPC connection may take for its TLS handshake and HTTP/2 "
        "preface before it is closed (env STRIDE_HANDSHAKE_TIMEOUT, default 10)",
    )
    parser.add_argument(
        "--stream-idle-timeout",
        type=float,
        default=env_default("stream-idle-timeout", idle_default),
        help="seconds a stream may pass no message either way before it is ended with "
        f"DEADLINE_EXCEEDED (env STRIDE_STREAM_IDLE_TIMEOUT, default {idle_default})",
    )


def stream_options(args: argparse.Namespace) -> dict[str, Any]:
    """ServerOptions keywords from `add_stream_arguments`' options."""
    return {
        "max_streams": args.max_streams,
        "max_health_watches": args.max_health_watches,
        "stream_idle_timeout": args.stream_idle_timeout,
        "max_connections": args.max_connections,
        "handshake_timeout": args.handshake_timeout,
        "receive_timeout": args.receive_timeout,
        "memory_budget_mb": args.grpc_memory_budget_mb,
        "memory_budget_mb_per_peer": args.grpc_memory_budget_mb_per_peer,
    }
