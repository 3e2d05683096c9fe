"""`stride serve-analysis`: the run-comparison gRPC server (stride.analysis.v1).

Every option also comes from the environment as STRIDE_<OPTION> (STRIDE_RUNS,
STRIDE_PORT, STRIDE_HEALTH_PORT, STRIDE_TLS_CERT, ...), which is how the
Kubernetes manifests configure it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stride.commands._paths import store_location
from stride.commands._server import (
    add_stream_arguments,
    env_default,
    stream_options,
    tls_and_token,
)

if TYPE_CHECKING:
    from services.analysis.lanes import CallLimits
    from services.common import ServerOptions

NAME = "serve-analysis"
HELP = "serve the run-comparison gRPC API (stride.analysis.v1) over a run store"
ORDER = 61
DEFAULT_PORT = 8003


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `stride serve-analysis` (each with an env default)."""
    parser.add_argument(
        "--runs",
        type=store_location,
        default=env_default("runs", "runs"),
        help="run store: a folder or a URI such as file:///PATH (env STRIDE_RUNS, default runs)",
    )
    # A WatchRun of a run with slow epochs sends nothing for minutes, legitimately: its
    # idle bound is the watch's own (one hour); the count of streams is what protects.
    add_stream_arguments(parser, idle_default="3600")
    parser.add_argument(
        "--max-run-file-mb",
        type=float,
        default=env_default("max-run-file-mb", "64"),
        help="a run file larger than this is listed as malformed, not read (env "
        "STRIDE_MAX_RUN_FILE_MB, default 64; a real run's metrics are a few MB)",
    )
    parser.add_argument(
        "--max-request-kb",
        type=float,
        default=env_default("max-request-kb", "64"),
        help="largest request in KB (env STRIDE_MAX_REQUEST_KB, default 64: requests are a "
        "few hundred bytes; answers may be up to 64 MB)",
    )
    parser.add_argument(
        "--run-memory-mb",
        type=float,
        default=env_default("run-memory-mb", "256"),
        help="memory parsed runs may take, cached or in use by calls; one client's calls may "
        "hold half of it, a run larger than that half is listed as not read, a call whose "
        "runs do not fit is RESOURCE_EXHAUSTED (env STRIDE_RUN_MEMORY_MB, default 256)",
    )
    parser.add_argument(
        "--max-queued-renders",
        type=int,
        default=env_default("max-queued-renders", "8"),
        help="RenderComparison calls that wait while one is drawn; more are refused with "
        "RESOURCE_EXHAUSTED, one client holds at most half the places "
        "(env STRIDE_MAX_QUEUED_RENDERS, default 8)",
    )
    parser.add_argument(
        "--analysis-workers",
        type=int,
        default=env_default("analysis-workers", "2"),
        help="comparison calls (CompareRuns, GradientFlow, PerformanceProfile, ...) computed "
        "at once (env STRIDE_ANALYSIS_WORKERS, default 2)",
    )
    parser.add_argument(
        "--max-queued-analyses",
        type=int,
        default=env_default("max-queued-analyses", "16"),
        help="comparison calls that wait for a worker; more are refused with "
        "RESOURCE_EXHAUSTED (env STRIDE_MAX_QUEUED_ANALYSES, default 16)",
    )
    parser.add_argument(
        "--host", default=env_default("host", "0.0.0.0"), help="address to listen on"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=env_default("port", str(DEFAULT_PORT)),
        help=f"gRPC port (env STRIDE_PORT, default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=env_default("health-port"),
        help="extra plaintext port with grpc.health.v1 only, for probes (env STRIDE_HEALTH_PORT)",
    )
    parser.add_argument(
        "--tls-cert", type=Path, default=env_default("tls-cert"), help="PEM certificate"
    )
    parser.add_argument(
        "--tls-key", type=Path, default=env_default("tls-key"), help="PEM private key"
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=env_default("tls-ca"),
        help="PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
    )
    parser.add_argument(
        "--auth-token-file",
        type=Path,
        default=env_default("auth-token-file"),
        help="file holding a bearer token every call but health must send",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=env_default("grace-period", "10"),
        help="seconds calls in flight get on SIGTERM (env STRIDE_GRACE_PERIOD, default 10)",
    )


def server_options(args: argparse.Namespace) -> ServerOptions:
    """ServerOptions from the parsed arguments; ValueError/OSError name a bad option."""
    from services.common import ServerOptions  # grpc: only when serving

    tls, token = tls_and_token(args)
    return ServerOptions(
        host=args.host,
        port=args.port,
        health_port=args.health_port,
        grace_period=args.grace_period,
        tls=tls,
        auth_token=token,
        max_request_kb=args.max_request_kb,
        **stream_options(args),
    )


def call_limits(args: argparse.Namespace) -> CallLimits:
    """CallLimits from the parsed arguments; ValueError names a bad option."""
    from services.analysis.lanes import CallLimits

    try:
        return CallLimits(
            render_queue=args.max_queued_renders,
            analysis_workers=args.analysis_workers,
            analysis_queue=args.max_queued_analyses,
        )
    except ValueError as exc:
        raise ValueError(
            f"{exc} (--max-queued-renders, --analysis-workers, --max-queued-analyses)"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT, then drain and exit 0."""
    from runstore import RunStore
    from services.analysis.server import AnalysisServer
    from services.common.server import return_large_allocations_to_the_os

    if not args.max_run_file_mb > 0:
        raise ValueError(f"--max-run-file-mb must be > 0, got {args.max_run_file_mb}")
    if not args.run_memory_mb > 0:
        raise ValueError(f"--run-memory-mb must be > 0, got {args.run_memory_mb}")
    # Run files of many MB are read whole and parsed runs come and go: freed buffers must
    # go back to the system rather than ratchet the heap up.
    return_large_allocations_to_the_os()
    store = RunStore(
        args.runs,
        max_file_bytes=int(args.max_run_file_mb * 2**20),
        memory_bytes=int(args.run_memory_mb * 2**20),
    )
    server = AnalysisServer(store, server_options(args), call_limits(args)).start()
    server.install_signal_handlers()
    health = f", health on {server.health_port}" if server.health_port else ""
    print(
        f"serving stride.analysis.v1 on {args.host}:{server.port}{health} (runs: {store.root})",
        file=sys.stderr,
        flush=True,
    )
    server.wait()
    if not server.finished():
        # A call still running past the grace period (a read blocked on the store): the
        # interpreter would wait for its thread at exit; the pod's own limit must not.
        logging.getLogger("stride.analysis").warning("exiting with calls still running")
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)
    return 0
