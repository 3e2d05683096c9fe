"""Fixtures of the analysis tests: synthetic run stores with known values."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.services.analysis.runstore import write_known_store


@pytest.fixture
def known_store(tmp_path: Path) -> Path:
    """A run store with experiment `opt`: adam and sgd, seeds 1-3, three epochs each."""
    return write_known_store(tmp_path / "runs")


class FakeContext:
    """The parts of grpc.ServicerContext the servicer uses, for in-process calls."""

    def __init__(self, timeout: float | None = None, peer: str = "ipv4:127.0.0.1:50000") -> None:
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._callbacks: list[Callable[[], None]] = []
        self._peer = peer
        self.cancelled = threading.Event()

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        return not self.cancelled.is_set()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._callbacks.append(callback)
        return True

    def cancel(self) -> None:
        self.cancelled.set()
        for callback in self._callbacks:
            callback()


@pytest.fixture
def context() -> FakeContext:
    """A servicer context without a deadline."""
    return FakeContext()
