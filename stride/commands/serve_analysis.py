"""`stride serve-analysis`: the run-comparison gRPC server (stride.analysis.v1).

Every option also comes from the environment as STRIDE_<OPTION> (STRIDE_RUNS,
STRIDE_PORT, STRIDE_HEALTH_PORT, STRIDE_TLS_CERT, ...), which is how the
Kubernetes manifests configure it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.common import ServerOptions

NAME = "serve-analysis"
HELP = "serve the run-comparison gRPC API (stride.analysis.v1) over a run store"
ORDER = 61
DEFAULT_PORT = 8003


def _env(option: str, default: str | None = None) -> str | None:
    """The default of --option from STRIDE_OPTION (dashes become underscores).

    argparse applies the option's `type` to a string default, so a bad value in the
    environment is reported like a bad flag.
    """
    return os.environ.get("STRIDE_" + option.upper().replace("-", "_"), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `stride serve-analysis` (each with an env default)."""
    parser.add_argument(
        "--runs",
        default=_env("runs", "runs"),
        help="run store: a folder or a URI such as file:///PATH (env STRIDE_RUNS, default runs)",
    )
    parser.add_argument("--host", default=_env("host", "0.0.0.0"), help="address to listen on")
    parser.add_argument(
        "--port",
        type=int,
        default=_env("port", str(DEFAULT_PORT)),
        help=f"gRPC port (env STRIDE_PORT, default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=_env("health-port"),
        help="extra plaintext port with grpc.health.v1 only, for probes (env STRIDE_HEALTH_PORT)",
    )
    parser.add_argument("--tls-cert", type=Path, default=_env("tls-cert"), help="PEM certificate")
    parser.add_argument("--tls-key", type=Path, default=_env("tls-key"), help="PEM private key")
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=_env("tls-ca"),
        help="PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
    )
    parser.add_argument(
        "--auth-token-file",
        type=Path,
        default=_env("auth-token-file"),
        help="file holding a bearer token every call but health must send",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=_env("grace-period", "10"),
        help="seconds calls in flight get on SIGTERM (env STRIDE_GRACE_PERIOD, default 10)",
    )


def server_options(args: argparse.Namespace) -> ServerOptions:
    """ServerOptions from the parsed arguments; ValueError/OSError name a bad option."""
    from services.common import ServerOptions, TlsFiles  # grpc: only when serving

    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key), args.tls_ca and Path(args.tls_ca))
    elif args.tls_ca:
        raise ValueError("--tls-ca needs --tls-cert and --tls-key")
    token = None
    if args.auth_token_file:
        token = Path(args.auth_token_file).read_text().strip()
        if not token:
            raise ValueError(f"auth token file {args.auth_token_file} is empty")
    return ServerOptions(
        host=args.host,
        port=args.port,
        health_port=args.health_port,
        grace_period=args.grace_period,
        tls=tls,
        auth_token=token,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT, then drain and exit 0."""
    from services.analysis.server import AnalysisServer
    from services.analysis.store import RunStore

    store = RunStore(str(args.runs))
    server = AnalysisServer(store, server_options(args)).start()
    server.install_signal_handlers()
    health = f", health on {server.health_port}" if server.health_port else ""
    print(
        f"serving stride.analysis.v1 on {args.host}:{server.port}{health} (runs: {store.root})",
        file=sys.stderr,
        flush=True,
    )
    server.wait()
    return 0
