"""The dynamic batcher: requests of any batch size queue up and run together.

Worker threads (one per model instance) take requests from one queue, in
order, as long as their rows fit in `max_batch_size`; they run the batch at
once when it reaches a preferred size or the maximum, when the oldest request
has waited `max_queue_delay`, or when no other request is on its way (waiting
then would only add latency). Each request gets exactly its own rows back.

The queue is bounded (`max_queue_size`: ResourceExhausted when full) and every
request may carry a deadline: one still queued when its deadline passes fails
with DeadlineExceeded and never runs.
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from services.common.errors import DeadlineExceeded, NotReady, ResourceExhausted

Batch = dict[str, np.ndarray]
# A lone request of a model that runs faster than this (a moving average) runs in the
# event loop's own thread: longer runs would hold every other call of the server.
LOOP_RUN_LIMIT_NS = 300_000
RunFn = Callable[[Batch], Batch]


class BatchTimes(NamedTuple):
    """What one execution took, for statistics (nanoseconds)."""

    batch_size: int
    input_ns: int  # concatenating inputs
    infer_ns: int  # the model
    output_ns: int  # splitting outputs


class _Pending:
    """One queued request. `done` is a bare lock, held until the outputs (or the error) are
    set: the waiting handler thread blocks on it (a threading.Event costs a Condition and
    two locks per request)."""

    __slots__ = (
        "deadline", "done", "enqueued", "error", "future", "inputs", "queue_ns", "result", "rows"
    )  # fmt: skip

    def __init__(self, inputs: Batch, rows: int, deadline: float | None) -> None:
        self.future: asyncio.Future[None] | None = None  # an event loop waits on this instead
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.enqueued = time.perf_counter()
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.result: Batch | None = None
        self.error: BaseException | None = None
        self.queue_ns = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done (True), or until `timeout` seconds pass (False)."""
        return self.done.acquire(timeout=-1 if timeout is None else timeout)


@dataclass(frozen=True)
class BatcherSettings:
    max_batch_size: int  # rows per execution; 0: the model has no batch dimension
    batching: bool  # False: one request per execution (Triton's default scheduler)
    preferred_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 0  # 0: unbounded


class DynamicBatcher:
    """A queue, a pool of runners (one per model instance) and a worker thread per runner.

    Fast path: a request that finds the queue empty, a runner free and no other request
    on its way runs at once in the caller's thread (no hand-off to a worker, which is
    most of the latency a lone client would otherwise see).
    """

    def __init__(
        self,
        name: str,
        runners: list[RunFn],
        settings: BatcherSettings,
        on_batch: Callable[[BatchTimes], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._queue: collections.deque[_Pending] = collections.deque()
        # `with self._lock` where no waiting is involved: Condition's own __enter__ is a
        # Python-level call, and the event loop takes this lock for every request.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._arriving = 0  # requests between `expect()` and `submit()`
        self._run_ns = float("inf")  # a moving average of one execution's time, unknown yet
        self._executing = 0
        self._free = list(runners)  # runners not executing
        self._on_batch = on_batch
        self._preferred = set(settings.preferred_sizes)
        self._largest_preferred = max(settings.preferred_sizes, default=0)
        self._workers = [
            threading.Thread(target=self._work, name=f"batcher-{name}-{i}", daemon=True)
            for i in range(len(runners))
        ]
        for worker in self._workers:
            worker.start()

    @property
    def pending(self) -> int:
        """Requests queued or executing (the pending-request gauge)."""
        return len(self._queue) + self._executing

    def expect(self) -> None:
        """Announce a request that is being decoded; the batcher may wait for it."""
        with self._lock:
            self._arriving += 1

    def unexpect(self) -> None:
        """Withdraw an `expect()` (the request failed before `submit`)."""
        with self._lock:
            self._arriving -= 1
            self._cond.notify()

    def submit(
        self, inputs: Batch, rows: int, deadline: float | None = None, *, expected: bool = False
    ) -> tuple[Batch, int]:
        """Queue `rows` rows and block until their outputs are ready; returns (outputs, queue ns).

        `deadline` is a `time.perf_counter()` value; a request still queued then fails.
        `expected`: this request was announced with `expect()` (withdrawn here, atomically).
        """
        run = None
        with self._lock:
            if expected:
                self._arriving -= 1
            self._admit()
            if not self._queue and self._free and self._arriving == 0:
                run = self._free.pop()
                self._executing += 1
            else:
                pending = _Pending(inputs, rows, deadline)
                self._queue.append(pending)
                if self._free:  # with every runner busy, the next release wakes a worker
                    self._cond.notify()
        if run is not None:
            try:
                return self._run_now(run, inputs, rows, deadline), 0
            finally:
                self._release(run, 1)
        else:
            timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
            if not pending.wait(timeout):
                with self._lock:
                    if pending in self._queue:  # still waiting: withdraw it
                        self._queue.remove(pending)
                        raise DeadlineExceeded(
                            f"request to model {self.name} timed out after "
                            f"{(time.perf_counter() - pending.enqueued) * 1e3:.1f} ms in the queue"
                        )
                pending.wait()  # already executing: the result is moments away
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result, pending.queue_ns

    async def submit_async(
        self, inputs: Batch, rows: int, deadline: float | None = None, *, expected: bool = False
    ) -> tuple[Batch, int]:
        """`submit` for a coroutine on an event loop: the same queue and batches, awaited.

        A request that finds the batcher idle, for a model whose runs take less than
        LOOP_RUN_LIMIT_NS (a moving average), runs at once in the loop's thread: no
        hand-over, and the loop is held only that long. Otherwise it is queued for a
        worker, which runs the queue as batches while the loop goes on reading requests,
        and wakes the loop once per batch. (Batching in the loop instead, by a drain
        scheduled behind the requests already read, formed no batches: grpc.aio starts
        about one call per loop turn. It only added two turns to each request.)
        """
        loop = asyncio.get_running_loop()
        run = None
        with self._lock:
            if expected:
                self._arriving -= 1
            self._admit()
            if (
                not self._queue
                and self._free
                and self._arriving == 0
                and self._run_ns <= LOOP_RUN_LIMIT_NS
            ):
                run = self._free.pop()
                self._executing += 1
            else:
                pending = _Pending(inputs, rows, deadline)
                future = pending.future = loop.create_future()
                self._queue.append(pending)
                if self._free:
                    self._cond.notify()
        if run is not None:
            try:
                return self._run_now(run, inputs, rows, deadline), 0
            finally:
                self._release(run, 1)
        timer = None
        if deadline is not None:
            delay = max(0.0, deadline - time.perf_counter())
            timer = loop.call_later(delay, self._expire, pending)
        try:
            await future
        except asyncio.CancelledError:  # the caller left: withdraw it if still queued
            self._withdraw(pending)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result, pending.queue_ns

    def _admit(self) -> None:
        """Refuse a request while closing or with a full queue (call holding the lock)."""
        if self._closed:
            raise NotReady(f"model {self.name} is unloading; retry")
        limit = self.settings.max_queue_size
        if limit and len(self._queue) >= limit:
            raise ResourceExhausted(
                f"the queue of model {self.name} is full ({limit} requests waiting); retry "
                "later or raise max_queue_size in its dynamic_batching default_queue_policy"
            )

    def _withdraw(self, pending: _Pending) -> bool:
        with self._lock:
            if pending in self._queue:
                self._queue.remove(pending)
                return True
        return False

    def _expire(self, pending: _Pending) -> None:
        """A queued request's deadline passed (on its event loop): fail it if still queued."""
        if self._withdraw(pending) and pending.future is not None and not pending.future.done():
            pending.error = DeadlineExceeded(
                f"request to model {self.name} timed out after "
                f"{(time.perf_counter() - pending.enqueued) * 1e3:.1f} ms in the queue"
            )
            pending.future.set_result(None)

    def close(self) -> None:
        """Stop taking requests; the workers finish everything queued, then exit."""
        with self._lock:
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join()

    def _run_now(self, run: RunFn, inputs: Batch, rows: int, deadline: float | None) -> Batch:
        """Run one request in the caller's thread (nothing queued, a runner taken): no
        queue, no copy in or out, so its queue and input/output times are zero."""
        if deadline is not None and time.perf_counter() > deadline:
            raise DeadlineExceeded(f"request to model {self.name} timed out before it could run")
        t1 = time.perf_counter_ns()
        outputs = run(inputs)
        infer_ns = time.perf_counter_ns() - t1
        self._observe(infer_ns)
        if self._on_batch is not None:
            self._on_batch(BatchTimes(rows, 0, infer_ns, 0))
        return outputs

    def _observe(self, run_ns: int) -> None:
        """Fold one execution's time into the moving average."""
        last = self._run_ns
        self._run_ns = float(run_ns) if last == float("inf") else 0.8 * last + 0.2 * run_ns

    # Worker side -------------------------------------------------------------

    def _ready(self, rows: int, taken: int, oldest: _Pending) -> tuple[bool, float]:
        """Whether to run now, and else how long to wait (seconds)."""
        s = self.settings
        if not s.batching or rows >= s.max_batch_size or taken < len(self._queue):
            return True, 0.0  # full, or the next request does not fit
        if rows in self._preferred or (self._largest_preferred and rows >= self._largest_preferred):
            return True, 0.0
        if self._arriving == 0 or self._closed:
            return True, 0.0  # nothing else is coming: waiting only adds latency
        left = oldest.enqueued + s.max_queue_delay_s - time.perf_counter()
        return left <= 0, left

    def _release(self, run: RunFn, count: int) -> None:
        with self._lock:
            self._free.append(run)
            self._executing -= count
            if self._queue:  # a worker may wait for this runner; else nobody needs waking
                self._cond.notify()

    def _take(self) -> tuple[list[_Pending], RunFn] | None:
        with self._lock:
            while True:
                while not self._queue or not self._free:
                    if self._closed and not self._queue:
                        return None
                    self._cond.wait()
                rows, taken = self._head()
                go, wait = self._ready(rows, taken, self._queue[0])
                if go:
                    batch = [self._queue.popleft() for _ in range(taken)]
                    self._executing += len(batch)
                    return batch, self._free.pop()
                self._cond.wait(wait)

    def _head(self) -> tuple[int, int]:
        """The rows and requests at the head of the queue that fit one execution."""
        rows, taken = 0, 0
        for pending in self._queue:
            if taken and (not self.settings.batching or rows + pending.rows > self._cap):
                break
            rows += pending.rows
            taken += 1
        return rows, taken

    @property
    def _cap(self) -> int:
        return max(self.settings.max_batch_size, 1)

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch, run = taken
            done: list[_Pending] = []
            try:
                done = self._execute(run, batch)
            finally:
                # The runner is free before its requests' waiters wake: a caller's next
                # request, sent the moment its answer comes, must find it free (and a lone
                # one of a fast model run at once) rather than queue behind a release.
                self._release(run, len(batch))
                _finish(done)

    def _execute(self, run: RunFn, batch: list[_Pending]) -> list[_Pending]:
        """Run the live requests of `batch` as one execution; returns them, each with its
        result or error, for the caller to wake (requests past their deadline are woken
        here, unrun)."""
        now = time.perf_counter()
        live = []
        for pending in batch:
            pending.queue_ns = int((now - pending.enqueued) * 1e9)
            if pending.deadline is not None and now > pending.deadline:
                pending.error = DeadlineExceeded(
                    f"request to model {self.name} timed out after {pending.queue_ns / 1e6:.1f} ms "
                    "in the queue"
                )
                _finish([pending])
            else:
                live.append(pending)
        if not live:
            return live
        try:
            t0 = time.perf_counter_ns()
            if len(live) == 1 or self.settings.max_batch_size == 0:
                feeds = live[0].inputs
            else:
                feeds = {k: stack_rows([p.inputs[k] for p in live]) for k in live[0].inputs}
            t1 = time.perf_counter_ns()
            outputs = run(feeds)
            t2 = time.perf_counter_ns()
            self._observe(t2 - t1)
            start = 0
            for pending in live:
                end = start + pending.rows
                if len(live) == 1:
                    pending.result = outputs
                else:
                    pending.result = {k: v[start:end] for k, v in outputs.items()}
                start = end
            t3 = time.perf_counter_ns()
            if self._on_batch is not None:
                self._on_batch(BatchTimes(sum(p.rows for p in live), t1 - t0, t2 - t1, t3 - t2))
        except BaseException as exc:  # the requests must learn of it; the worker lives on
            for pending in live:
                pending.error = exc
        return live


def stack_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """`np.concatenate(arrays)` along the rows, holding the GIL throughout.

    numpy lets go of the GIL while it copies each array of more than a few hundred
    elements, and a worker thread that lets go of it waits for a busy event loop to
    give it back: up to a switch interval per array, so a batch of many requests waited
    far longer than its copy takes; one bytes join holds the GIL throughout
    (docs/notes/request-costs.md).
    """
    first = arrays[0]
    tail = first.shape[1:]
    if all(a.dtype == first.dtype and a.shape[1:] == tail and a.flags.c_contiguous for a in arrays):
        rows = sum(a.shape[0] for a in arrays)
        joined = b"".join([a.data for a in arrays])
        return np.frombuffer(joined, first.dtype).reshape(rows, *tail)
    return np.concatenate(arrays)


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # a caller that left cancelled its future
            future.set_result(None)


def _finish(pendings: list[_Pending]) -> None:
    """Wake the waiters of finished requests: a thread each, an event loop once per batch."""
    loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for pending in pendings:
        if pending.future is None:
            pending.done.release()
        else:
            loops.setdefault(pending.future.get_loop(), []).append(pending.future)
    for loop, futures in loops.items():
        # A loop that closed meanwhile has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, futures)
