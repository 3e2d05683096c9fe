"""Building `stride serve`'s InferenceServer from its parsed options: shared by the
command (one process) and each worker of `stride serve --workers N`
(stride.commands._serve_workers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stride.commands._server import stream_options, tls_and_token


def server_options(args: argparse.Namespace) -> Any:
    """ServerOptions from parsed arguments (ValueError/OSError name the bad option)."""
    from services.common import ServerOptions

    tls, token = tls_and_token(args)
    return ServerOptions(
        host=args.host,
        port=args.port,
        health_port=args.health_port,
        handler_threads=args.handler_threads,
        max_concurrent_requests=args.max_concurrent_requests,
        **stream_options(args),
        max_message_mb=args.max_message_mb,
        grace_period=args.grace_period,
        tls=tls,
        auth_token=token,
    )


def http_memory_budget(args: argparse.Namespace) -> tuple[float, float]:
    """The REST memory budget and its share per client address, in MB, as the flags (or
    their defaults) say."""
    budget = args.http_memory_budget_mb or max(256, 4 * args.max_message_mb)
    return budget, args.http_memory_budget_mb_per_peer or budget / 2


def build_server(args: argparse.Namespace, *, reuse_port: bool = False, cores: int = 0) -> Any:
    """The InferenceServer that `args` describe, not started. `reuse_port` and `cores`:
    one process of several on shared ports, on `cores` of the machine's cores."""
    import dataclasses

    from services.inference.rest_server import HttpOptions
    from services.inference.runtime import RuntimeOptions
    from services.inference.server import InferenceServer, MetricsOptions
    from services.inference.tensors import RequestLimits
    from stride import __version__

    metrics = MetricsOptions(
        port=args.metrics_port,
        max_connections=args.metrics_max_connections,
        timeout=args.metrics_timeout,
        tls=args.metrics_tls == "on",
    )
    limits = RequestLimits(
        max_bytes_elements=args.max_bytes_elements,
        max_image_scale=args.max_image_scale,
        max_decodes=args.max_decodes,
    )
    options = dataclasses.replace(server_options(args), reuse_port=reuse_port)
    http = None
    if args.http_port >= 0:
        budget, budget_per_peer = http_memory_budget(args)
        http = HttpOptions(
            host=args.host,
            port=args.http_port,
            threads=args.http_threads,
            max_message_mb=args.max_message_mb,
            memory_budget_mb=budget,
            memory_budget_mb_per_peer=budget_per_peer,
            max_connections=args.http_max_connections,
            max_connections_per_peer=args.http_max_connections_per_peer,
            tls=options.tls,
            auth_token=options.auth_token,
            grace_period=args.grace_period,
            max_concurrent=args.max_concurrent_requests,
            body_timeout=args.http_body_timeout,
            header_timeout=args.http_header_timeout,
            reuse_port=reuse_port,
        )
    return InferenceServer(
        Path(args.repository),
        options,
        http=http,
        metrics=None if args.metrics_port < 0 else metrics,
        poll_interval=args.poll_interval or None,
        runtime=RuntimeOptions(intra_op_threads=args.threads, spin=args.spin, cores=cores),
        limits=limits,
        version=__version__,
        model_control=args.model_control == "explicit",
    )
