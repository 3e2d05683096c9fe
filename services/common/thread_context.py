"""The servicer context a plain-function handler gets on a handler thread.

grpc.aio's own context is the event loop's and must not be used from another thread,
and its thread-side stand-in lacks `code()`, `is_active()` and friends (a generated
default method calling `set_code` failed with INTERNAL). This one offers what the
threaded gRPC server's context did: metadata, deadline, peer, `abort`, `set_code` /
`set_details` (a status set and then raised or returned ends the call with it, as
gRPC's default methods expect), `add_callback` (run when the call ends) and
`is_active`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc


class Aborted(Exception):
    """`abort` from a handler thread: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ThreadContext:
    """A call's context for a handler running on a thread (see the module docstring)."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._metadata = tuple(context.invocation_metadata() or ())
        remaining = context.time_remaining()
        self._deadline = (
            None if remaining is None or remaining > 1e6 else time.monotonic() + remaining
        )
        self._peer = context.peer()
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._ended = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.aborted: Aborted | None = None

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        return not self._ended.is_set() and not self._context.done()

    def peer(self) -> str:
        return str(self._peer)

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.aborted = Aborted(code, details)
        raise self.aborted

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata: Any) -> None:
        """Accepted and ignored: the server's own trailing metadata (the request id) stays."""

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Run `callback` when the call ends (at once if it has ended)."""
        with self._lock:
            if not self._ended.is_set():
                self._callbacks.append(callback)
                return True
        callback()
        return True

    def raise_if_failed(self) -> None:
        """Raise the status the handler set (`abort`, or `set_code` to a failure)."""
        if self.aborted is not None:
            raise self.aborted
        if self._code is not None and self._code != grpc.StatusCode.OK:
            raise Aborted(self._code, self._details or self._code.name)

    def finish(self) -> None:
        self.raise_if_failed()

    def end(self) -> None:
        """The call is over: `is_active` turns False and the callbacks run."""
        with self._lock:
            self._ended.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
