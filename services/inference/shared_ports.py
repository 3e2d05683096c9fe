"""Ports that several server processes share (`stride serve --workers N`, Linux)."""

from __future__ import annotations

import socket
import sys


def reuse_port_supported() -> bool:
    """Whether the kernel spreads connections among sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind `port` on `host` (0: a free one) for processes that will share it: OSError if
    anything is bound there already. The socket stays bound but does not listen, so it
    takes no connections; keep it open while the processes run."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))  # without SO_REUSEPORT: fails if anyone holds the port
        port = int(probe.getsockname()[1])
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    finally:
        probe.close()
    held = socket.socket(family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, port))
    except OSError as exc:
        held.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return held
