"""`stride serve --workers N`: how many, what each worker gets, the supervisor's start, and
the worker process itself (`python -m stride.commands._serve_workers --channel FD`).

The supervisor (services.inference.workers) holds the ports and the metrics port; each
worker is a whole `stride serve` on the shared ports with its share of every limit that
counts things held at once (connections, memory, calls, streams, threads, decodes) and
of the cores, so that the flags keep meaning the whole server. A limit smaller than the
workers gives each worker 1 (and each worker's REST memory budget holds at least one
message of --max-message-mb).

The leading underscore keeps this module out of the subcommand list (stride.cli).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

# Options that are paths (sent to the workers as text).
PATH_OPTIONS = ("repository", "tls_cert", "tls_key", "tls_ca", "auth_token_file")
# Counts of things held at once, divided among the workers.
DIVIDED = (
    "max_connections",
    "http_max_connections",
    "http_max_connections_per_peer",
    "max_concurrent_requests",
    "max_streams",
    "max_health_watches",
    "handler_threads",
    "http_threads",
)
CORES_PER_WORKER = 2  # the default: one worker per this many cores


def worker_count(workers: int) -> int:
    """The workers to run: `workers`, or for 0 one per CORES_PER_WORKER cores of the CPU
    limit (at least 1). ValueError for a negative count or, off Linux, more than one."""
    if workers < 0:
        raise ValueError(f"--workers must be >= 0 (0: one per two cores), got {workers}")
    if workers == 0:
        from services.inference.runtime import cpu_limit

        workers = max(1, cpu_limit() // CORES_PER_WORKER)
    if workers > 1:
        from services.inference.shared_ports import reuse_port_supported

        if not reuse_port_supported():
            raise ValueError(
                f"--workers {workers} needs processes sharing a port (SO_REUSEPORT with the "
                f"kernel spreading connections among them), which only Linux has; on "
                f"{sys.platform} use --workers 1, and more servers behind a load balancer"
            )
    return workers


def share(value: int, count: int, index: int) -> int:
    """Worker `index`'s part of `value` split among `count` workers: the parts add up to
    `value`, each at least 1."""
    return max(1, value // count + (1 if index < value % count else 0))


def worker_args(
    args: argparse.Namespace, count: int, index: int, ports: dict[str, int]
) -> argparse.Namespace:
    """The options of worker `index` of `count`: the resolved ports, its share of each
    limit, no metrics port and no polling of its own (the supervisor has both)."""
    from stride.commands._inference_server import http_memory_budget

    mine = argparse.Namespace(**vars(args))
    for name in DIVIDED:
        value = getattr(args, name)
        if value is not None:
            setattr(mine, name, share(value, count, index))
    mine.http_max_connections_per_peer = min(
        mine.http_max_connections_per_peer, mine.http_max_connections
    )
    if args.max_decodes:
        mine.max_decodes = share(args.max_decodes, count, index)
    else:  # one per core: per worker, its share of the cores
        mine.max_decodes = worker_cores(count)
    budget, per_peer = http_memory_budget(args)
    mine.http_memory_budget_mb = max(budget / count, args.max_message_mb)
    mine.http_memory_budget_mb_per_peer = min(
        max(per_peer / count, args.max_message_mb), mine.http_memory_budget_mb
    )
    mine.port, mine.http_port = ports["grpc"], ports["http"]
    mine.health_port = ports.get("health")
    mine.metrics_port = -1
    mine.poll_interval = 0
    mine.workers = 1
    return mine


def worker_cores(count: int) -> int:
    """Each worker's share of the cores (at least 1)."""
    from services.inference.runtime import cpu_limit

    return max(1, cpu_limit() // count)


def to_json(args: argparse.Namespace) -> dict[str, Any]:
    """The options as JSON values (paths as text; the command's own entries left out)."""
    return {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if not key.startswith("_")
    }


def from_json(data: dict[str, Any]) -> argparse.Namespace:
    args = argparse.Namespace(**data)
    for key in PATH_OPTIONS:
        if getattr(args, key, None) is not None:
            setattr(args, key, Path(getattr(args, key)))
    return args


# The supervisor ---------------------------------------------------------------------


def supervise(args: argparse.Namespace, count: int) -> int:
    """Reserve the ports, start `count` workers on them, serve until SIGTERM/SIGINT or a
    worker's exit; the exit status (0: every worker drained and exited 0)."""
    from services.inference.shared_ports import reserve_port
    from services.inference.workers import MetricsPort, Supervisor
    from stride.commands._inference_server import server_options

    tls = server_options(args).tls  # also checks the TLS files and token before any start
    if args.metrics_tls == "on" and tls is None:
        raise ValueError("metrics over TLS needs the server's TLS files (--tls-cert/--tls-key)")
    wanted = {"grpc": args.port, "http": args.http_port, "health": args.health_port}
    held, ports = [], {"http": -1}
    try:
        for name, port in wanted.items():
            if port is not None and port >= 0:
                held.append(reserve_port(args.host, port))
                ports[name] = int(held[-1].getsockname()[1])
    except OSError:
        for sock in held:
            sock.close()
        raise
    metrics = None
    if args.metrics_port >= 0:
        metrics = MetricsPort(
            args.host,
            args.metrics_port,
            args.metrics_max_connections,
            args.metrics_timeout,
            tls if args.metrics_tls == "on" else None,
        )
    cores = worker_cores(count)

    def spec(index: int) -> dict[str, Any]:
        mine = worker_args(args, count, index, ports)
        return {"index": index, "count": count, "cores": cores, "args": to_json(mine)}

    supervisor = Supervisor(
        count,
        [sys.executable, "-m", "stride.commands._serve_workers"],
        spec,
        grace_period=args.grace_period,
        poll_interval=args.poll_interval or None,
        metrics=metrics,
        held=held,
    )
    supervisor.install_signal_handlers()
    supervisor.start()
    m = supervisor.metrics
    print(
        f"stride serve: listening on {args.host}:{ports['grpc']}"
        + (f", HTTP on :{ports['http']}" if ports["http"] >= 0 else "")
        + (f", metrics on :{m.port}/metrics" if m else "")
        + (" (TLS)" if m and m.tls else "")
        + f"; {count} workers, pids "
        + " ".join(str(w.proc.pid) for w in supervisor.workers),
        flush=True,
    )
    return supervisor.wait()


# A worker ---------------------------------------------------------------------------


class _WorkerFilter(logging.Filter):
    """Name the worker on every log line (`worker` in JSON lines, `[worker N]` in text)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def _serve(channel: Any, spec: dict[str, Any]) -> int:
    from services.common import configure_json_logging
    from services.common.server import return_large_allocations_to_the_os
    from services.inference.worker_link import WorkerLink, snapshot_of
    from stride.commands._inference_server import build_server

    args = from_json(spec["args"])
    index = int(spec["index"])
    root = logging.getLogger()
    if args.log_format == "json":
        configure_json_logging(root.level or "INFO")
    else:
        for handler in root.handlers:
            handler.setFormatter(
                logging.Formatter(
                    "%(asctime)s %(levelname)s %(name)s [worker %(worker)s]: %(message)s"
                )
            )
    for handler in root.handlers:
        handler.addFilter(_WorkerFilter(index))
    return_large_allocations_to_the_os()
    server = build_server(args, reuse_port=True, cores=int(spec["cores"]))
    server.start()

    def lost() -> None:
        threading.Thread(target=server.stop, name="stride-stop", daemon=True).start()

    link = WorkerLink(
        channel,
        index,
        server.repository,
        snapshot=lambda: snapshot_of(server.repository, server.counters),
        on_lost=lost,
    )
    server.servicer.core.cluster = link
    server.install_signal_handlers()
    link.start()
    server.wait()
    link.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """A worker: read its options from the supervisor, serve until told to stop."""
    from services.inference.worker_link import Channel

    parser = argparse.ArgumentParser(prog="stride serve (worker)")
    parser.add_argument("--channel", type=int, required=True, help="the supervisor link's fd")
    fd = parser.parse_args(argv).channel
    channel = Channel(socket.socket(fileno=fd))
    spec = channel.receive()
    if spec is None:
        return 2  # the supervisor went away before it said anything
    level = spec["args"].get("log_level") or "WARNING"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _serve(channel, spec)
    except KeyboardInterrupt:  # Ctrl-C reached it before its handlers were set: nothing served
        return 130
    except (ValueError, OSError, LookupError) as exc:
        if os.environ.get("STRIDE_DEBUG"):
            raise
        print(f"stride serve: error: worker {spec.get('index')}: {exc}", file=sys.stderr)
        return 2
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
