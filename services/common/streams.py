"""Streaming calls get their own threads, a maximum count and an idle timeout.

gRPC's synchronous server runs each call on a thread of one pool for as long as
the call lasts. A streaming call (ModelStreamInfer, WatchRun, health Watch,
reflection) that a client opens and then leaves idle holds its thread forever:
about as many idle streams as there are handler threads froze every other call,
health checks included. So streams run on a pool of their own that is never
larger than `max_streams` (plus a few threads that only refuse), a stream past
that count is refused at once with RESOURCE_EXHAUSTED, and a stream that moves
no message either way for `idle_timeout` seconds is ended with DEADLINE_EXCEEDED
(Envoy's `stream_idle_timeout` has the same meaning and the same 300 s default).

One watchdog thread checks every open stream a few times per idle timeout; a
client that keeps its stream busy is never cut.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from services.common.errors import ResourceExhausted

log = logging.getLogger("stride.services.streams")

DEFAULT_MAX_STREAMS = 32
DEFAULT_IDLE_TIMEOUT = 300.0
# Threads past `max_streams` in the stream pool: a stream over the limit needs a thread
# for the few microseconds it takes to refuse it, and must not queue behind idle ones.
REFUSING_THREADS = 4


def end_call(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End a call from another thread with `code` and `details`.

    The public `context.cancel()` wakes a handler blocked on the client's next message
    but tells the client only CANCELLED. The call object underneath (a private part of
    grpcio; tests/services/common/test_lanes.py checks that the status still arrives)
    can send a real status, so the client learns why.
    """
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        if call is not None:
            call.cancel(code.value[0], details)
            return
    except Exception:  # an older or newer grpcio: fall back to the public API
        log.debug("cancel with status failed; cancelling plainly", exc_info=True)
    context.cancel()


class Stream:
    """One open stream: when it last moved a message, and whether the watchdog ended it."""

    __slots__ = ("context", "ended", "last", "method")

    def __init__(self, method: str, context: grpc.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.last = time.monotonic()
        self.ended = False

    def requests(self, iterator: Iterator[Any]) -> Iterator[Any]:
        """The client's messages, each one marking the stream active."""
        for request in iterator:
            self.last = time.monotonic()
            yield request

    def responses(self, iterator: Iterator[Any]) -> Iterator[Any]:
        """The handler's messages, each one marking the stream active."""
        for response in iterator:
            self.last = time.monotonic()
            yield response


class StreamGuard:
    """Counts open streams, refuses those past the limit and ends idle ones."""

    def __init__(
        self,
        max_streams: int = DEFAULT_MAX_STREAMS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        if max_streams < 1:
            raise ValueError(f"max streams must be at least 1, got {max_streams}")
        if idle_timeout <= 0:
            raise ValueError(f"stream idle timeout must be positive, got {idle_timeout} s")
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        # gRPC runs a handler on the pool named by its behaviour's `experimental_thread_pool`.
        self.pool = futures.ThreadPoolExecutor(
            max_workers=max_streams + REFUSING_THREADS, thread_name_prefix="grpc-stream"
        )
        self.refused = 0
        self.ended_idle = 0
        self._open: set[Stream] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    @contextlib.contextmanager
    def slot(self, method: str, context: grpc.ServicerContext) -> Iterator[Stream]:
        """Hold one of the `max_streams` slots while the stream runs (ResourceExhausted if none)."""
        with self._lock:
            if len(self._open) >= self.max_streams:
                self.refused += 1
                raise ResourceExhausted(
                    f"{self.max_streams} streams are open already, the most this server "
                    "allows (--max-streams); close one or try again later"
                )
            stream = Stream(method, context)
            self._open.add(stream)
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="stream-watchdog", daemon=True
                )
                self._watchdog.start()
        try:
            yield stream
        finally:
            with self._lock:
                self._open.discard(stream)

    def _watch(self) -> None:
        period = min(1.0, self.idle_timeout / 4)
        while not self._closed.wait(period):
            now = time.monotonic()
            with self._lock:
                idle = [s for s in self._open if not s.ended and now - s.last > self.idle_timeout]
                for stream in idle:
                    stream.ended = True
                    self.ended_idle += 1
            for stream in idle:
                log.info(
                    "%s: stream idle for more than %.0f s, ended",
                    stream.method,
                    self.idle_timeout,
                    extra={"method": stream.method},
                )
                end_call(
                    stream.context,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"stream idle for more than {self.idle_timeout:g} s (no message either "
                    "way; --stream-idle-timeout): open a new one when there is work",
                )

    def close(self) -> None:
        """Stop the watchdog and the stream threads (after the server has stopped)."""
        self._closed.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
