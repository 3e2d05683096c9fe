"""The gRPC memory budget (services.common.budget) on its own: who waits, who is refused,
what a call holds before and after its read, and that nothing is left held."""

from __future__ import annotations

import asyncio

import pytest

from services.common.budget import ReadBudget, TooCostly
from services.common.errors import DeadlineExceeded, ResourceExhausted

MB = 2**20


def run(coroutine):
    return asyncio.run(coroutine)


def test_reads_past_the_budget_wait_and_go_in_order() -> None:
    async def main() -> None:
        budget = ReadBudget(4 * MB, 4 * MB)
        first = [await budget.reserve("a", MB, 5) for _ in range(4)]
        waiting = [asyncio.ensure_future(budget.reserve("a", MB, 5)) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiting) and budget.held == 4 * MB
        first[0].release()
        await asyncio.sleep(0.01)
        assert waiting[0].done() and not waiting[1].done()
        first[1].settle(MB // 8)  # read: the request costs less than the read's reservation
        first[2].settle(MB // 8)
        await asyncio.sleep(0.01)
        assert waiting[1].done() and budget.held == 3 * MB + MB // 4
        for hold in [*first, *(w.result() for w in waiting)]:
            hold.release()
        assert budget.held == 0 and budget.of("a") == 0 and budget.peak == 4 * MB

    run(main())


def test_a_client_whose_share_is_full_does_not_hold_up_the_others() -> None:
    async def main() -> None:
        budget = ReadBudget(4 * MB, 2 * MB)
        held = [await budget.reserve("attacker", MB, 5) for _ in range(2)]
        blocked = asyncio.ensure_future(budget.reserve("attacker", MB, 5))
        await asyncio.sleep(0.01)
        other = await asyncio.wait_for(budget.reserve("client", MB, 5), 1)
        assert not blocked.done()
        other.release()
        held[0].release()
        await asyncio.sleep(0.01)
        assert blocked.done()
        for hold in (held[1], blocked.result()):
            hold.release()
        assert budget.held == 0

    run(main())


def test_a_read_that_finds_no_room_in_time_is_refused_and_holds_nothing() -> None:
    async def main() -> None:
        budget = ReadBudget(MB, MB)
        hold = await budget.reserve("a", MB, 5)
        with pytest.raises(DeadlineExceeded, match="--grpc-memory-budget-mb"):
            await budget.reserve("b", MB, 0.05)
        cancelled = asyncio.ensure_future(budget.reserve("b", MB, 5))
        await asyncio.sleep(0.01)
        cancelled.cancel()  # the client gave up
        await asyncio.sleep(0.01)
        hold.release()
        assert budget.held == 0 and not budget._waiters

    run(main())


def test_a_request_that_costs_more_than_a_client_may_hold_is_refused_at_once() -> None:
    async def main() -> None:
        budget = ReadBudget(6 * MB, 4 * MB)
        with pytest.raises(TooCostly, match="--grpc-memory-budget-mb-per-peer"):
            await budget.reserve("a", 5 * MB, 5)
        hold = await budget.reserve("a", 2 * MB, 5)
        with pytest.raises(TooCostly):
            hold.settle(6 * MB)  # read: it parses into more than the share
        other = await budget.reserve("b", 4 * MB, 5)
        with pytest.raises(ResourceExhausted, match="free"):
            hold.settle(4 * MB)  # fits the share, not what is free now
        assert hold.size == 2 * MB
        other.release()
        hold.settle(4 * MB)
        hold.release()
        hold.release()  # once only
        assert budget.held == 0

    run(main())


def test_request_streams_hold_a_read_while_open_and_at_most_half() -> None:
    async def main() -> None:
        budget = ReadBudget(8 * MB, 8 * MB)
        streams = [budget.open_stream("a", 2 * MB) for _ in range(2)]
        with pytest.raises(ResourceExhausted, match="request stream"):
            budget.open_stream("a", 2 * MB)
        reads = [await asyncio.wait_for(budget.reserve("a", 2 * MB, 5), 1) for _ in range(2)]
        with pytest.raises(ResourceExhausted):
            streams[0].settle(3 * MB)  # a message larger than the read: no room now
        reads[0].release()
        streams[0].settle(3 * MB)
        assert budget.held == 7 * MB
        streams[0].settle(2 * MB)  # served: back to a read's worth for the next message
        for hold in [*streams, *reads]:
            hold.release()
        assert budget.held == 0 and budget.streams == 0

    run(main())
