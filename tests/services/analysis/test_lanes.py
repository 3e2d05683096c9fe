"""Lanes (services.analysis.lanes) and the health they feed (services.analysis.health),
in process with FakeContext: bounded queues, shares per client, work dropped when its
client leaves, shutdown. tests/services/test_resilience_analysis*.py run the same
through a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runstore import RunStore
from services.analysis.health import HealthMonitor
from services.analysis.lanes import Lane, peer_key
from services.common.errors import Cancelled, DeadlineExceeded, NotReady, ResourceExhausted
from tests.services.analysis.conftest import FakeContext

WAIT = 30.0  # generous: a loaded machine at twice its cores


def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait for `condition` (an event in another thread), failing after `timeout`."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.005)


class Call:
    """One call through a lane on a thread of its own; its work waits for `release`."""

    def __init__(self, lane: Lane, context: FakeContext, *, checks: bool = False) -> None:
        self.context = context
        self.release = threading.Event()
        self.started = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

        def work(check: Callable[[], None]) -> str:
            self.started.set()
            while not self.release.wait(0.01):
                if checks:
                    check()
            return "drawn"

        def run() -> None:
            try:
                self.result = lane.run(context, work)
            except BaseException as exc:  # recorded for the test
                self.error = exc
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> Any:
        self.release.set()
        assert self.done.wait(WAIT)
        return self.result


def context(host: int, port: int = 1000, timeout: float | None = None) -> FakeContext:
    return FakeContext(timeout=timeout, peer=f"ipv4:10.0.0.{host}:{port}")


def test_a_lane_runs_in_order_and_refuses_past_its_places_at_once() -> None:
    lane = Lane("RenderComparison", workers=1, queue=2, flag="--max-queued-renders")
    first = Call(lane, context(1))
    assert first.started.wait(WAIT)
    waiting = [Call(lane, context(2)), Call(lane, context(3))]
    until(lambda: lane.waiting == 2)
    with pytest.raises(ResourceExhausted) as info:
        lane.run(context(4), lambda check: "never")
    assert "1 RenderComparison calls are running and 2 waiting" in str(info.value)
    assert "--max-queued-renders 2" in str(info.value)
    assert first.finish() == "drawn"
    assert waiting[0].started.wait(WAIT) and not waiting[1].started.is_set()  # in order
    assert [c.finish() for c in waiting] == ["drawn", "drawn"]
    assert lane.running == lane.waiting == 0


def test_one_client_holds_at_most_half_of_a_lane() -> None:
    lane = Lane("comparison", workers=1, queue=3, flag="--max-queued-analyses")
    assert lane.per_peer == 2
    mine = [Call(lane, context(1, port=1000)), Call(lane, context(1, port=1001))]
    until(lambda: lane.running + lane.waiting == 2)
    with pytest.raises(ResourceExhausted, match="this client has 2 comparison calls"):
        lane.run(context(1, port=1002), lambda check: "never")  # a new connection: same client
    other = Call(lane, context(2))  # another client still gets a place
    until(lambda: lane.waiting == 2)
    assert [c.finish() for c in [*mine, other]] == ["drawn"] * 3


def test_a_waiting_call_leaves_the_queue_when_its_client_cancels() -> None:
    lane = Lane("RenderComparison", workers=1, queue=4, flag="--max-queued-renders")
    first = Call(lane, context(1))
    assert first.started.wait(WAIT)
    queued = Call(lane, context(2))
    until(lambda: lane.waiting == 1)
    queued.context.cancel()  # gRPC runs the call's callbacks when its client leaves
    assert queued.done.wait(WAIT)
    assert isinstance(queued.error, Cancelled) and not queued.started.is_set()
    assert lane.waiting == 0
    first.finish()


def test_a_waiting_call_leaves_the_queue_when_its_deadline_passes() -> None:
    lane = Lane("RenderComparison", workers=1, queue=4, flag="--max-queued-renders")
    first = Call(lane, context(1))
    assert first.started.wait(WAIT)
    queued = Call(lane, context(2, timeout=0.2))
    assert queued.done.wait(WAIT)
    assert isinstance(queued.error, DeadlineExceeded), queued.error
    assert "1 running, 0 ahead of it" in str(queued.error)
    first.finish()


def test_running_work_stops_at_its_next_check_once_its_client_has_gone() -> None:
    lane = Lane("RenderComparison", workers=1, queue=0, flag="--max-queued-renders")
    call = Call(lane, context(1), checks=True)
    assert call.started.wait(WAIT)
    call.context.cancel()
    assert call.done.wait(WAIT)
    assert isinstance(call.error, Cancelled) and lane.running == 0


def test_close_refuses_the_waiting_calls_at_once_and_lets_the_running_one_finish() -> None:
    lane = Lane("RenderComparison", workers=1, queue=4, flag="--max-queued-renders")
    running = Call(lane, context(1))
    assert running.started.wait(WAIT)
    queued = [Call(lane, context(2)), Call(lane, context(3))]
    until(lambda: lane.waiting == 2)
    lane.close()
    for call in queued:
        assert call.done.wait(WAIT)
        assert isinstance(call.error, NotReady) and "shutting down" in str(call.error)
    with pytest.raises(NotReady):
        lane.run(context(4), lambda check: "never")
    assert not lane.wait_idle(0.01)
    assert running.finish() == "drawn"
    assert lane.wait_idle(WAIT)


def test_a_client_is_its_address_without_the_port() -> None:
    assert peer_key(FakeContext(peer="ipv4:10.1.2.3:4567")) == "ipv4:10.1.2.3"
    assert peer_key(FakeContext(peer="ipv6:[::1]:4567")) == "ipv6:[::1]"
    assert peer_key(FakeContext(peer="unix:/tmp/s")) == "unix:/tmp/s"


def test_health_turns_not_serving_for_work_that_does_not_stop(tmp_path: Path) -> None:
    lane = Lane("RenderComparison", workers=1, queue=1, flag="--max-queued-renders")
    reports: list[tuple[bool, str]] = []
    monitor = HealthMonitor(
        RunStore(tmp_path), [lane], lambda s, r: reports.append((s, r)), period=0.02, stall=0.1
    ).start()
    try:
        stuck = Call(lane, context(1))  # work that never checks
        assert stuck.started.wait(WAIT)
        stuck.context.cancel()  # its client has gone; the work goes on
        until(lambda: bool(reports))
        serving, reason = reports[0]
        assert not serving and "RenderComparison call has gone on" in reason
        stuck.finish()
        until(lambda: len(reports) == 2)
        assert reports[1] == (True, "")
    finally:
        monitor.stop()


def test_health_turns_not_serving_when_the_store_cannot_be_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore(tmp_path)
    reports: list[tuple[bool, str]] = []
    monitor = HealthMonitor(store, [], lambda s, r: reports.append((s, r)), period=0.02)

    def refuse(rel: str = "") -> list[str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store.files, "list_dirs", refuse)
    monitor.start()
    try:
        until(lambda: bool(reports))
        assert reports[0] == (False, "the run store cannot be listed: Permission denied")
        monkeypatch.undo()
        until(lambda: len(reports) == 2)
        assert reports[1][0] is True
    finally:
        monitor.stop()
