"""A server of several processes (`stride serve --workers N`): the supervisor.

The supervisor starts N worker processes, each a whole `stride serve` with its own event
loop, threads and ONNX Runtime sessions, on the same gRPC, REST and health ports
(SO_REUSEPORT: the kernel spreads new connections among them; Linux only). It is on no
request's path. What it does:

- ports: it checks that each is free (0: picks one) and keeps it bound, not listening,
  until the server stops, so that no other program takes it meanwhile;
- the repository: one scan every poll interval, taken by every worker in the same
  round: each loads what changed, and routes to it only once every worker has loaded it
  (services.inference.worker_link). Load and unload calls become rounds too, answered
  once every worker has taken them. After each round the workers' states are compared;
  a difference (the folder changed while they scanned) is scanned again at once;
- metrics: it serves the metrics port itself, each scrape the sum over the workers
  (each worker answers its own statistics over its link), plus each worker's calls;
- statistics: a worker answering ModelStatistics asks it for the same sum;
- shutdown: SIGTERM or SIGINT is passed to every worker, which drains as a lone server
  does (health NOT_SERVING, calls in flight get the grace period); it exits 0 when all
  of them did;
- a worker that exits on its own (killed, crashed, out of memory) stops the server: the
  others drain and the supervisor exits 1 naming the worker and its exit status, for the
  supervisor above it (Kubernetes, systemd) to restart the whole server. A restarted
  worker alone would start with the repository's current files, not the versions the
  others serve, and with its counters at zero.
"""

from __future__ import annotations

import itertools
import logging
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from services.common.counters import CallTotals
from services.common.errors import NotReady
from services.common.options import TlsFiles
from services.inference.metrics import MetricsServer, WorkerCalls, render_page
from services.inference.worker_link import Channel, error_to_dict, merged_models

log = logging.getLogger("stride.inference.workers")

GATHER_TIMEOUT_S = 10.0  # seconds a worker has to send its statistics
STOP_MARGIN_S = 30.0  # beyond the grace period, before a worker that has not exited is killed


class WorkerFailed(OSError):
    """A worker could not start, or exited on its own."""


@dataclass
class Worker:
    """One worker process and what the supervisor knows of it."""

    index: int
    proc: subprocess.Popen[bytes]
    channel: Channel
    pid: int = 0
    digest: str = ""
    ready: threading.Event = field(default_factory=threading.Event)
    gone: threading.Event = field(default_factory=threading.Event)


@dataclass
class Round:
    """A repository change every worker takes together (a scan, a load or an unload)."""

    op: dict[str, Any]
    reply_to: tuple[Worker, int] | None = None  # the worker and request a client is waiting on
    ident: int = 0
    prepared: set[int] = field(default_factory=set)
    done: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsPort:
    """Where and how the supervisor serves /metrics (the workers serve none)."""

    host: str
    port: int
    max_connections: int
    timeout: float
    tls: TlsFiles | None


class Supervisor:
    """Start N workers on shared ports, coordinate them, stop them together.

    `command` starts one worker: it gets the worker's end of a socket pair as
    `--channel FD` and reads `spec(index)` as its first message.
    """

    def __init__(
        self,
        count: int,
        command: Sequence[str],
        spec: Callable[[int], dict[str, Any]],
        *,
        grace_period: float,
        poll_interval: float | None = None,
        metrics: MetricsPort | None = None,
        held: Sequence[socket.socket] = (),  # reserved ports, closed when the server stops
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, got {count}")
        self.count = count
        self._command = list(command)
        self._spec = spec
        self._grace = grace_period
        self._poll_interval = poll_interval
        self._metrics_port = metrics
        self._held = list(held)
        self.metrics: MetricsServer | None = None
        self.workers: list[Worker] = []
        self._stop = threading.Event()  # asked to stop: a signal, or a worker that died
        self._stopping = False
        self.failure: str | None = None  # why the server stopped on its own
        self._requests: queue.Queue[Round | None] = queue.Queue()
        self._cond = threading.Condition()
        self._round: Round | None = None
        self._rounds = itertools.count(1)
        self._ids = itertools.count(1)
        # Statistics asked of the workers: request id -> (worker index, its answer)
        self._snapshots: dict[int, tuple[int, futures.Future[dict[str, Any]]]] = {}
        self._helpers = futures.ThreadPoolExecutor(4, thread_name_prefix="supervisor")
        self._coordinator = threading.Thread(
            target=self._coordinate, name="supervisor-rounds", daemon=True
        )

    # Start ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop every worker (call from the main thread)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("received %s: draining every worker", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def start(self) -> Supervisor:
        """Bind the metrics port, start every worker and wait until all serve (WorkerFailed
        names the one that could not start; the others are stopped first)."""
        try:
            if self._metrics_port is not None:
                m = self._metrics_port
                self.metrics = MetricsServer(
                    m.host,
                    m.port,
                    max_connections=m.max_connections,
                    timeout=m.timeout,
                    tls=m.tls,
                    page=self.page,
                )
            for index in range(self.count):
                self.workers.append(self._spawn(index))
            for worker in self.workers:
                while not worker.ready.wait(0.2):
                    if worker.gone.is_set():
                        raise WorkerFailed(
                            f"worker {worker.index} exited with {_status(worker.proc)} before "
                            "it was ready (its error is above)"
                        )
                    if self._stop.is_set():
                        return self
            if self.metrics is not None:
                self.metrics.start()
        except BaseException:
            self._stop.set()
            self.stop()
            raise
        self._coordinator.start()
        if len({w.digest for w in self.workers}) > 1:
            log.warning("the workers loaded different repository states: scanning again")
            self._requests.put(Round({"op": "poll"}))
        log.info(
            "%d workers serving (pids %s)", self.count, ", ".join(str(w.pid) for w in self.workers)
        )
        return self

    def _spawn(self, index: int) -> Worker:
        mine, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [*self._command, "--channel", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        worker = Worker(index, proc, Channel(mine))
        worker.channel.send(self._spec(index))
        threading.Thread(
            target=self._read, args=(worker,), name=f"supervisor-{index}", daemon=True
        ).start()
        return worker

    # Serve and stop ------------------------------------------------------------------

    def wait(self) -> int:
        """Serve until asked to stop or a worker exits, then stop every worker; the exit
        status: 0 when all drained and exited 0, 1 otherwise."""
        while not self._stop.wait(0.5):
            pass
        return self.stop()

    def stop(self) -> int:
        """SIGTERM every worker, wait for them (the grace period and a margin; then they
        are killed), release the ports and the metrics port."""
        with self._cond:
            if self._stopping:
                return 1 if self.failure else 0
            self._stopping = True
            self._cond.notify_all()
        self._stop.set()
        self._requests.put(None)
        clean = self.failure is None
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + STOP_MARGIN_S
        for worker in self.workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop: killed", worker.index, worker.proc.pid)
                worker.proc.kill()
                worker.proc.wait()
            # A worker still starting when the signal came has no handler for it yet.
            if worker.proc.returncode not in (0, 130, -signal.SIGTERM, -signal.SIGINT):
                clean = False
        for worker in self.workers:
            worker.channel.close()
        if self.metrics is not None:
            self.metrics.stop()
        for sock in self._held:
            sock.close()
        self._helpers.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")
        return 0 if clean else 1

    def _lost(self, worker: Worker) -> None:
        """A worker's link closed: it exited (or is about to)."""
        code = worker.proc.wait()
        worker.gone.set()
        with self._cond:
            for index, future in self._snapshots.values():
                if index == worker.index and not future.done():
                    future.set_exception(OSError(f"worker {worker.index} exited"))
            self._cond.notify_all()
            if self._stopping or not worker.ready.is_set():
                return
            self.failure = (
                f"worker {worker.index} (pid {worker.proc.pid}) exited with "
                f"{_status(worker.proc)}: stopping the server"
            )
        if code == 0:
            log.warning("%s", self.failure)
        else:
            log.error("%s", self.failure)
        print(f"stride serve: {self.failure}", file=sys.stderr, flush=True)
        self._stop.set()

    # Messages from the workers ---------------------------------------------------------

    def _read(self, worker: Worker) -> None:
        while True:
            try:
                message = worker.channel.receive()
            except ValueError:
                log.exception("unreadable message from worker %d", worker.index)
                continue
            if message is None:
                break
            op = message.get("op")
            if op == "ready":
                worker.pid, worker.digest = int(message["pid"]), str(message["digest"])
                worker.ready.set()
            elif op == "snapshot":
                with self._cond:
                    _, future = self._snapshots.pop(int(message["id"]), (0, None))
                if future is not None and not future.done():
                    future.set_result(message["data"])
            elif op in ("prepared", "done"):
                with self._cond:
                    current = self._round
                    if current is not None and message.get("round") == current.ident:
                        if op == "prepared":
                            current.prepared.add(worker.index)
                        else:
                            current.done[worker.index] = message
                        self._cond.notify_all()
            elif op == "control":
                action = {"op": message["action"], "name": message["name"]}
                self._requests.put(Round(action, reply_to=(worker, int(message["id"]))))
            elif op == "gather":
                self._helpers.submit(self._answer_gather, worker, int(message["id"]))
        self._lost(worker)

    def _answer_gather(self, worker: Worker, ident: int) -> None:
        try:
            gathered = self.gather()
        except OSError as exc:
            error = error_to_dict(NotReady(f"the server's statistics are unavailable: {exc}"))
            worker.channel.send({"op": "reply", "id": ident, "error": error})
            return
        workers = [{"index": i, "pid": pid, "data": data} for i, pid, data in gathered]
        worker.channel.send({"op": "reply", "id": ident, "workers": workers})

    # Statistics ----------------------------------------------------------------------

    def gather(self, timeout: float = GATHER_TIMEOUT_S) -> list[tuple[int, int, dict[str, Any]]]:
        """Every worker's statistics: (index, pid, snapshot); OSError when one does not
        answer within `timeout` (a sum without it would make counters go down)."""
        asked = []
        with self._cond:
            for worker in self.workers:
                future: futures.Future[dict[str, Any]] = futures.Future()
                ident = next(self._ids)
                self._snapshots[ident] = (worker.index, future)
                asked.append((worker, ident, future))
        deadline = time.monotonic() + timeout
        out = []
        for worker, ident, future in asked:
            if worker.gone.is_set() or not worker.channel.send({"op": "snapshot", "id": ident}):
                future.set_exception(OSError(f"worker {worker.index} has exited"))
            try:
                out.append((worker.index, worker.pid, future.result(deadline - time.monotonic())))
            except futures.TimeoutError:
                raise OSError(
                    f"worker {worker.index} did not send its statistics within {timeout:.0f} s"
                ) from None
            finally:
                with self._cond:
                    self._snapshots.pop(ident, None)
        return out

    def page(self) -> str:
        """The metrics page: every figure summed over the workers, and each worker's calls."""
        gathered = self.gather()
        models = merged_models(data for _, _, data in gathered)
        calls: dict[tuple[str, str, str], CallTotals] = {}
        ignored: dict[tuple[str, str], int] = {}
        workers = []
        for index, pid, data in gathered:
            per_protocol: dict[str, int] = {"grpc": 0, "http": 0}
            for protocol, method, outcome, count, ns in data["calls"]:
                totals = calls.setdefault((protocol, method, outcome), CallTotals())
                totals.count += count
                totals.ns += ns
                per_protocol[protocol] = per_protocol.get(protocol, 0) + count
            for protocol, where, count in data["ignored"]:
                ignored[(protocol, where)] = ignored.get((protocol, where), 0) + count
            workers.append(WorkerCalls(index, pid, per_protocol))
        snaps = [(name, version, snap) for (name, version), snap in models.items()]
        return render_page(
            snaps, (dict(sorted(calls.items())), dict(sorted(ignored.items()))), workers
        )

    # Repository rounds ---------------------------------------------------------------

    def _coordinate(self) -> None:
        interval = self._poll_interval
        next_poll = time.monotonic() + interval if interval else None
        while not self._stopping:
            wait = 0.5 if next_poll is None else max(0.0, next_poll - time.monotonic())
            try:
                request = self._requests.get(timeout=min(wait, 0.5))
            except queue.Empty:
                if next_poll is None or time.monotonic() < next_poll:
                    continue
                request = Round({"op": "poll"})
            if request is None:
                break
            try:
                self._take(request)
            except Exception:  # a failed round must not end the rounds
                log.exception("repository round %s failed", request.op)
            if request.op["op"] == "poll" and interval:
                next_poll = time.monotonic() + interval
        while True:  # answer whoever still waits
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            if request is not None:
                self._reply(request, error_to_dict(NotReady("the server is stopping")))

    def _take(self, request: Round, again: bool = True) -> None:
        done = self._run(request)
        if done is None:  # stopping
            self._reply(request, error_to_dict(NotReady("the server is stopping")))
            return
        errors = [d["error"] for d in done.values() if d.get("error")]
        mine = done.get(request.reply_to[0].index, {}) if request.reply_to else {}
        self._reply(request, mine.get("error") or (errors[0] if errors else None))
        digests = {d["digest"] for d in done.values()}
        if len(digests) > 1:
            states = ", ".join(f"worker {i}: {d['digest']}" for i, d in sorted(done.items()))
            if again:
                log.warning(
                    "the workers serve different repository states after %s (%s): the "
                    "folder changed while they scanned; scanning again",
                    request.op["op"],
                    states,
                )
                self._take(Round({"op": "poll"}), again=False)
            else:
                log.error("the workers still serve different repository states: %s", states)

    def _run(self, request: Round) -> dict[int, dict[str, Any]] | None:
        """Send the round to every worker, commit it once each has loaded (or answered),
        return each worker's answer; None when the server stops meanwhile."""
        with self._cond:
            request.ident = next(self._rounds)
            self._round = request
        live = [w for w in self.workers if not w.gone.is_set()]
        for worker in live:
            worker.channel.send({**request.op, "round": request.ident})

        def answered(what: Callable[[Worker], bool]) -> bool:
            return self._stopping or all(what(w) or w.gone.is_set() for w in live)

        with self._cond:
            self._cond.wait_for(
                lambda: answered(lambda w: w.index in request.prepared or w.index in request.done)
            )
            if self._stopping:
                return None
            ready = sorted(request.prepared - set(request.done))
        if ready:
            log.info(
                "round %d (%s): every worker has loaded; routing to it",
                request.ident,
                " ".join(str(v) for v in request.op.values()),
            )
        for index in ready:
            self.workers[index].channel.send({"op": "commit", "round": request.ident})
        with self._cond:
            self._cond.wait_for(lambda: answered(lambda w: w.index in request.done))
            self._round = None
            if self._stopping:
                return None
            return dict(request.done)

    def _reply(self, request: Round, error: dict[str, str] | None) -> None:
        if request.reply_to is not None:
            worker, ident = request.reply_to
            worker.channel.send({"op": "reply", "id": ident, "error": error})


def _status(proc: subprocess.Popen[bytes]) -> str:
    code = proc.returncode
    if code is None:
        return "no status yet"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


__all__ = [
    "MetricsPort",
    "Supervisor",
    "WorkerFailed",
]
