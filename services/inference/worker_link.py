"""One process of a server of several (`stride serve --workers N`): its end of the link to
the supervisor (services.inference.workers).

The processes share the gRPC and REST ports (SO_REUSEPORT: the kernel spreads
connections among them), and each has its own event loop, threads and ONNX Runtime
sessions. What must agree across them goes through the supervisor:

- the repository: no process polls on its own. The supervisor starts every scan, load
  and unload in all of them at once (a "round"); each loads and warms up what changed,
  says so, and routes to it only when every process has (`ModelRepository.swap_together`);
- repository load and unload calls: whichever process a client reaches asks the
  supervisor for a round, and answers once every process has taken it;
- statistics: ModelStatistics (gRPC and REST) answers the sum over every process.

Messages are JSON objects, one a line, over a Unix socket pair (`Channel`). When the
supervisor goes away, the process drains and stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from services.common import errors
from services.common.errors import NotReady, ServiceError
from services.inference.repository import ModelRepository
from services.inference.stats import Snapshot, merge_snapshots, snapshot_from_dict
from services.inference.stats import snapshot_to_dict as _to_dict

log = logging.getLogger("stride.inference.workers")

# Seconds a process waits for the supervisor's answer to a statistics request.
GATHER_TIMEOUT_S = 15.0


class Channel:
    """JSON messages, one a line, over a connected stream socket; `send` from any thread,
    `receive` from one."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self._reader = sock.makefile("rb")
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> bool:
        """Send a message; False when the other end is gone."""
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            with self._lock:
                self.socket.sendall(data)
        except OSError:
            return False
        return True

    def receive(self) -> dict[str, Any] | None:
        """The next message; None when the other end has closed."""
        try:
            line = self._reader.readline()
        except OSError:
            return None
        if not line:
            return None
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"a message on the worker link is not an object: {line[:80]!r}")
        return message

    def close(self) -> None:
        """Close both ways; a thread blocked in `receive` gets None."""
        with contextlib.suppress(OSError):
            # First: closing the reader while a thread reads from it would wait for that read.
            self.socket.shutdown(socket.SHUT_RDWR)
        for closing in (self._reader, self.socket):
            with contextlib.suppress(OSError):
                closing.close()


def repository_digest(repository: ModelRepository) -> str:
    """What a process serves, in a few characters: every model, version and state."""
    states = [(e.name, e.version, e.state) for e in repository.index()]
    return hashlib.sha256(json.dumps(states).encode()).hexdigest()[:16]


def error_to_dict(exc: BaseException) -> dict[str, str]:
    """A domain error as the link carries it (its class name and public message)."""
    if isinstance(exc, ServiceError):
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "ServiceError", "message": "the repository change failed; see the log"}


def error_from_dict(data: dict[str, str]) -> ServiceError:
    """The inverse of `error_to_dict` (an unknown class: a plain ServiceError, INTERNAL)."""
    cls = getattr(errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, ServiceError)):
        cls = ServiceError
    return cls(str(data.get("message", "")))


class WorkerLink:
    """A worker's end of the supervisor link: runs the supervisor's rounds on the
    repository, answers its requests for statistics, and asks it for rounds and sums."""

    def __init__(
        self,
        channel: Channel,
        index: int,
        repository: ModelRepository,
        *,
        snapshot: Callable[[], dict[str, Any]],  # this process's statistics, as plain values
        on_lost: Callable[[], None],  # the supervisor is gone: stop serving
    ) -> None:
        self.channel = channel
        self.index = index
        self.repository = repository
        self._snapshot = snapshot
        self._on_lost = on_lost
        self._ops: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._commit = threading.Event()
        self._closed = threading.Event()
        self._round = 0
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._waiting_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="worker-link", daemon=True)
        self._runner = threading.Thread(target=self._run_ops, name="worker-rounds", daemon=True)

    # Life cycle ------------------------------------------------------------------------

    def start(self) -> WorkerLink:
        """Take the repository's swaps under the supervisor's rounds, start listening, and
        tell the supervisor this process serves."""
        self.repository.swap_together = self._swap_together
        self._runner.start()
        self._reader.start()
        self.channel.send(
            {"op": "ready", "pid": os.getpid(), "digest": repository_digest(self.repository)}
        )
        return self

    def close(self) -> None:
        """Release whatever waits on the supervisor (the server is stopping)."""
        self._closed.set()
        self._ops.put(None)
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(NotReady("the server is stopping"))

    # From the supervisor ------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                message = self.channel.receive()
            except ValueError:
                log.exception("unreadable message from the supervisor")
                continue
            if message is None:
                break
            op = message.get("op")
            if op == "snapshot":
                self.channel.send({"op": "snapshot", "id": message["id"], "data": self._snapshot()})
            elif op in ("poll", "load", "unload"):
                self._ops.put(message)
            elif op == "commit":
                if message.get("round") == self._round:
                    self._commit.set()
            elif op == "reply":
                with self._waiting_lock:
                    future = self._waiting.pop(int(message["id"]), None)
                if future is not None and not future.done():
                    future.set_result(message)
        if not self._closed.is_set():
            log.error("the supervisor of this server is gone: stopping")
            self.close()
            self._on_lost()

    def _run_ops(self) -> None:
        while (message := self._ops.get()) is not None:
            self._round = int(message["round"])
            self._commit.clear()
            error = None
            try:
                if message["op"] == "poll":
                    self.repository.poll()
                elif message["op"] == "load":
                    self.repository.load(str(message["name"]))
                else:
                    self.repository.unload(str(message["name"]))
            except ServiceError as exc:
                error = error_to_dict(exc)
            except Exception as exc:  # a failed scan must not end the rounds
                log.exception("repository %s failed", message["op"])
                error = error_to_dict(exc)
            self.channel.send(
                {
                    "op": "done",
                    "round": self._round,
                    "error": error,
                    "digest": repository_digest(self.repository),
                }
            )

    def _swap_together(self, stop: threading.Event) -> None:
        """Called by the repository with every change loaded: say so, and return when the
        supervisor says every process has (or when this one stops)."""
        log.info("round %d: loaded; routing to it once every worker has", self._round)
        self.channel.send({"op": "prepared", "round": self._round})
        while not self._commit.wait(0.5):
            if stop.is_set() or self._closed.is_set():
                return

    # To the supervisor --------------------------------------------------------------

    def _ask(self, message: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        future: Future[dict[str, Any]] = Future()
        with self._waiting_lock:
            if self._closed.is_set():
                raise NotReady("the server is stopping")
            ident = next(self._ids)
            self._waiting[ident] = future
        if not self.channel.send({**message, "id": ident}):
            raise NotReady("the server is stopping")
        try:
            return future.result(timeout)
        except TimeoutError:
            with self._waiting_lock:
                self._waiting.pop(ident, None)
            raise NotReady(
                "the server's processes did not answer in time; try again later"
            ) from None

    def control(self, action: str, name: str) -> None:
        """Load or unload a model in every process of the server; returns once all have,
        raising the domain error that the load or unload raised."""
        reply = self._ask({"op": "control", "action": action, "name": name}, None)
        if reply.get("error"):
            raise error_from_dict(reply["error"])

    def statistics(self) -> dict[tuple[str, str], Snapshot]:
        """Each loaded version's statistics, summed over every process of the server."""
        reply = self._ask({"op": "gather"}, GATHER_TIMEOUT_S)
        if reply.get("error"):
            raise error_from_dict(reply["error"])
        return merged_models(item["data"] for item in reply["workers"])


def merged_models(datas: Any) -> dict[tuple[str, str], Snapshot]:
    """Statistics by (model, version), summed over the snapshots of several processes."""
    found: dict[tuple[str, str], list[Snapshot]] = {}
    for data in datas:
        for model in data["models"]:
            key = (str(model["name"]), str(model["version"]))
            found.setdefault(key, []).append(snapshot_from_dict(model["stats"]))

    def order(key: tuple[str, str]) -> tuple[str, int]:
        return key[0], int(key[1]) if key[1].isdigit() else -1

    return {key: merge_snapshots(found[key]) for key in sorted(found, key=order)}


def snapshot_of(repository: ModelRepository, counters: Any) -> dict[str, Any]:
    """This process's statistics and call counters as plain values, for the supervisor."""
    models = [
        {
            "name": m.name,
            "version": str(m.version),
            "stats": _to_dict(m.stats.snapshot(pending=m.batcher.pending)),
        }
        for m in repository.models()
    ]
    calls = [[*key, t.count, t.ns] for key, t in counters.snapshot().items()]
    ignored = [[*key, count] for key, count in counters.ignored_parameters().items()]
    return {"models": models, "calls": calls, "ignored": ignored}
