"""Read a whole run store: its experiments and their runs, as immutable records.

The reader is tolerant by design: it is pointed at folders that training is still
writing, at runs that crashed, and at files written by other versions.

- A run without `summary.json` is `running`; failed and stopped runs are read like
  others.
- A truncated last line of `metrics.jsonl` (a crash mid-write) is skipped with a
  warning; unknown fields anywhere are ignored.
- Anything else that breaks the format (bad JSON, a missing config.json, a number that
  is a string, epochs out of order, a file over the size limit, a symlink out of the
  store, a FIFO) makes the run *malformed*: it is listed with the reason and skipped,
  and never raises out of a scan.

Parsed runs are cached by the size and modification time of their files, so a
server answering many calls about a large store parses each run once per change.
Only JSON is parsed; nothing is ever unpickled.

Memory: what parsing builds is counted (runstore.budget) and, with `memory_bytes`,
bounded. Every parsed run alive in the process counts, cached or held by a call, until
it is freed. The cache keeps runs by that count, not by number, and gives them up
first when a parse needs room. A run that could not fit even alone is `RunTooLarge`
(listed apart like a malformed run); one that does not fit beside the runs calls hold
right now is `ReaderBusy`, which a server answers RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runstore.budget import ClientShares, MemoryBudget, current_tally, json_bound, json_size, mib
from runstore.errors import ExperimentNotFound, MalformedRun, ReaderBusy, RunNotFound, RunTooLarge
from runstore.files import Files, open_files
from runstore.location import StoreLocation
from runstore.names import check_read_name, is_readable_name
from runstore.records import (
    ConfigRecord,
    EpochRecord,
    SummaryRecord,
    parse_config_record,
    parse_metrics,
    parse_summary,
)
from runstore.rundir import CONFIG, METRICS, SUMMARY, RunDir

DEFAULT_MAX_FILE_BYTES = 64 * 2**20  # per run file; a real run's metrics are a few MB
# What the cache keeps when no memory budget is given (with one, the budget bounds it).
DEFAULT_CACHE_BYTES = 256 * 2**20
MEMORY_FLAG = "--run-memory-mb"  # the serve-analysis option that sets memory_bytes
METER_STEP = 2**20  # a parse reserves memory in steps of this many bytes
MAX_INDEXED_RUNS = 100_000  # statuses remembered for listings (a few hundred bytes each)
_MISSING = object()


@dataclass(frozen=True)
class Run:
    """A readable run: its config.json, its epochs so far and its summary if it ended."""

    experiment: str
    run_id: str
    record: ConfigRecord | None  # None: failed or starting before config.json was written
    epochs: tuple[EpochRecord, ...]
    summary: SummaryRecord | None
    warnings: tuple[str, ...] = ()

    @property
    def config(self) -> Mapping[str, Any]:
        """The resolved run config (config.json's `config`)."""
        return self.record.config if self.record is not None else {}

    @property
    def status(self) -> str:
        """`completed` or `failed` from summary.json; `running` while it is absent."""
        return self.summary.status if self.summary else "running"

    @property
    def seed(self) -> int | None:
        """`config.seed` when it is an integer."""
        seed = self.config.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    @property
    def grid(self) -> Mapping[str, Any]:
        """The swept values of this run (empty for a single run)."""
        return self.record.grid if self.record is not None else {}

    def value(self, key: str) -> Any:
        """The config value at a dotted key (`optimizer.name`), or a sentinel when absent."""
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return _MISSING
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        """Whether the config has a value at the dotted key."""
        return self.value(key) is not _MISSING

    def label(self, key: str) -> str:
        """The config value at `key` as text, the way it is written on a command line."""
        return format_value(self.value(key))


@dataclass(frozen=True)
class Skipped:
    """A run left out of an answer, and why (malformed, failed, still running, ...)."""

    experiment: str
    run_id: str
    reason: str


@dataclass(frozen=True)
class Scan:
    """The readable runs of an experiment and the malformed ones, by run id."""

    runs: tuple[Run, ...]
    malformed: tuple[Skipped, ...] = field(default=())


def format_value(value: Any) -> str:
    """A config value as text: strings as they are, everything else as JSON."""
    if value is _MISSING:
        return "(unset)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


class RunStore:
    """Read-only access to `RUNS/<experiment>/<run-id>/` under a path or URI."""

    def __init__(
        self,
        root: str | os.PathLike[str] | StoreLocation | Files,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        memory_bytes: int | None = None,
    ) -> None:
        """`memory_bytes` bounds the memory parsed runs take (None: no bound; the cache
        then keeps DEFAULT_CACHE_BYTES of them); the calls of one client (see
        `shares.client`) may hold half of it."""
        self.files = root if isinstance(root, Files) else open_files(root)
        self.max_file_bytes = max_file_bytes
        self.budget = MemoryBudget(memory_bytes)
        self.shares = ClientShares(None if memory_bytes is None else memory_bytes // 2)
        self.cache_bytes = DEFAULT_CACHE_BYTES if memory_bytes is None else memory_bytes
        # (experiment, run id) -> (stamp of its files, the run, what it takes); a malformed
        # run's entry holds its error's class and message instead of the run
        self._cache: OrderedDict[tuple[str, str], tuple[Any, Any, int]] = OrderedDict()
        self._cached_bytes = 0
        # (experiment, run id) -> (stamp, status or None when malformed): each_status's
        self._statuses: OrderedDict[tuple[str, str], tuple[Any, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def root(self) -> str:
        """The store as it is shown in messages (no credentials)."""
        return self.files.display

    def experiments(self) -> list[str]:
        """Names of the experiments (folders with a readable name) in the store."""
        return [n for n in self.files.list_dirs() if is_readable_name(n)]

    def run_ids(self, experiment: str) -> list[str]:
        """Run folders of an experiment (hidden and temporary folders left out)."""
        check_read_name("experiment", experiment)
        if not self.files.is_dir(experiment):
            raise ExperimentNotFound(f"experiment {experiment!r} not found in the run store")
        return [n for n in self.files.list_dirs(experiment) if not n.startswith(".")]

    def run_dir(self, experiment: str, run_id: str) -> RunDir:
        """The folder of an existing run, for following it (RunNotFound when absent)."""
        self._check_exists(experiment, run_id)
        return RunDir(self.files.child(experiment, run_id))

    def scan(self, experiment: str) -> Scan:
        """Read every run of an experiment; malformed runs are listed, never raised
        (ReaderBusy is: the runs did not fit in memory now, which is no run's fault)."""
        runs: list[Run] = []
        malformed: list[Skipped] = []
        for item in self._each(experiment, held=True):
            if isinstance(item, Run):
                runs.append(item)
            else:
                malformed.append(item)
        return Scan(tuple(runs), tuple(malformed))

    def each_run(self, experiment: str) -> Iterator[Run | Skipped]:
        """The runs of an experiment one at a time, malformed ones as Skipped, for a
        caller that holds one run at a time (a run no longer counts against the caller's
        share once the next one is asked for)."""
        return self._each(experiment, held=False)

    def _each(self, experiment: str, *, held: bool) -> Iterator[Run | Skipped]:
        for run_id in self.run_ids(experiment):
            try:
                run = self._read(experiment, run_id)
            except RunTooLarge as exc:
                yield Skipped(experiment, run_id, f"not read: {exc}")
                continue
            except MalformedRun as exc:
                yield Skipped(experiment, run_id, f"malformed: {exc}")
                continue
            except OSError as exc:  # permissions, a file system hiccup: this run only
                yield Skipped(experiment, run_id, f"unreadable: {_os_reason(exc)}")
                continue
            yield run
            if not held:
                _let_go(run)
            del run  # not kept alive by this generator while the caller goes on

    def each_status(self, experiment: str) -> Iterator[tuple[str, str | None]]:
        """(run id, status) of each run of an experiment; None for a run that is malformed,
        not read or unreadable. Statuses are remembered apart from the parsed runs (a few
        bytes each, up to MAX_INDEXED_RUNS), so a listing of a store larger than the
        memory budget parses only what changed."""
        for run_id in self.run_ids(experiment):
            key = (experiment, run_id)
            stamp = self._stamp(experiment, run_id) if is_readable_name(run_id) else None
            with self._lock:
                known = self._statuses.get(key)
                if stamp is not None and known is not None and known[0] == stamp:
                    self._statuses.move_to_end(key)
                    yield run_id, known[1]
                    continue
            try:
                run = self._read(experiment, run_id)
            except (MalformedRun, OSError):
                status: str | None = None
            else:
                status = run.status
                _let_go(run)
                del run
            if stamp is not None and stamp[0] is not None:
                self._index(key, stamp, status)  # the stamp from before the read: safe
            yield run_id, status

    def run(self, experiment: str, run_id: str) -> Run:
        """One run; RunNotFound if absent, MalformedRun if unreadable."""
        self._check_exists(experiment, run_id)
        try:
            return self._read(experiment, run_id)
        except RunTooLarge as exc:
            raise RunTooLarge(f"run {run_id!r} of {experiment!r} is not read: {exc}") from None
        except MalformedRun as exc:
            raise MalformedRun(f"run {run_id!r} of {experiment!r} is malformed: {exc}") from None
        except OSError as exc:
            reason = _os_reason(exc)
            raise MalformedRun(
                f"run {run_id!r} of {experiment!r} is unreadable: {reason}"
            ) from None

    def _check_exists(self, experiment: str, run_id: str) -> None:
        check_read_name("experiment", experiment)
        check_read_name("run id", run_id)
        if not self.files.is_dir(f"{experiment}/{run_id}"):
            if not self.files.is_dir(experiment):
                raise ExperimentNotFound(f"experiment {experiment!r} not found in the run store")
            raise RunNotFound(f"run {run_id!r} not found in experiment {experiment!r}")

    # ------------------------------------------------------------ reading one run

    def _read(self, experiment: str, run_id: str) -> Run:
        if not is_readable_name(run_id):
            raise MalformedRun(f"folder name {run_id!r} is not a valid run id")
        folder = self.files.child(experiment, run_id)
        stamp = self._stamp(experiment, run_id)
        key = (experiment, run_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == stamp:
                self._cache.move_to_end(key)
                found = cached[1]
                if isinstance(found, Run):
                    return found
                raise found[0](found[1])  # malformed, as it was when last read
        for name, size in zip((CONFIG, METRICS, SUMMARY), stamp, strict=True):
            if size is not None and size[0] > self.max_file_bytes:
                raise MalformedRun(
                    f"{name} is {size[0] / 2**20:.1f} MiB, over the reader's limit of "
                    f"{self.max_file_bytes / 2**20:.1f} MiB (--max-run-file-mb)"
                )
        meter = _Meter(self, experiment, run_id)
        try:
            run = _parse_run(folder, experiment, run_id, meter)
        except MalformedRun as exc:  # remembered: a listing does not parse it every time
            meter.release()
            if stamp[0] is not None:
                text = str(exc)
                self._remember(key, stamp, (type(exc), text), sys.getsizeof(text) + 200)
            raise
        except BaseException:
            meter.release()
            raise
        cost = meter.settle()
        self.budget.hold_for(run, cost)  # from now on, given back when the run is freed
        if meter.tally is not None:
            meter.tally.hold_for(run, cost)
        if stamp[0] is not None:  # cache runs whose config exists (a starting run changes)
            self._remember(key, stamp, run, cost)
        return run

    def _stamp(self, experiment: str, run_id: str) -> tuple[Any, ...]:
        """The (size, mtime) of a run's three files: what says it changed."""
        folder = self.files.child(experiment, run_id)
        return tuple(folder.size(name) for name in (CONFIG, METRICS, SUMMARY))

    def _index(self, key: tuple[str, str], stamp: Any, status: str | None) -> None:
        with self._lock:
            self._statuses[key] = (stamp, status)
            self._statuses.move_to_end(key)
            while len(self._statuses) > MAX_INDEXED_RUNS:
                self._statuses.popitem(last=False)

    def _remember(
        self, key: tuple[str, str], stamp: Any, run: Run | tuple[type, str], cost: int
    ) -> None:
        if cost > self.cache_bytes:
            return
        evicted = []
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._cached_bytes -= old[2]
                evicted.append(old)
            self._cache[key] = (stamp, run, cost)
            self._cached_bytes += cost
            while self._cached_bytes > self.cache_bytes:
                evicted.append(self._pop_oldest())
        del evicted  # freed here, outside the lock (their finalizers take the budget's)

    def _pop_oldest(self) -> tuple[Any, Any, int]:
        _, entry = self._cache.popitem(last=False)
        self._cached_bytes -= entry[2]
        return entry

    def evict_oldest(self) -> bool:
        """Drop the least recently used run from the cache (False when it is empty). Its
        memory comes back unless a call still holds the run."""
        with self._lock:
            if not self._cache:
                return False
            entry = self._pop_oldest()
        del entry
        return True

    @property
    def cached_bytes(self) -> int:
        """What the runs in the cache take (some may be held by calls too)."""
        return self._cached_bytes


class _Meter:
    """One parse's reservations in its store's budget: `charge` before memory is taken
    (raising when it cannot be), `refund` when it is given back. It reserves in steps of
    METER_STEP and keeps the unused part as credit, so that the many small charges of a
    long metrics file do not each take the budget's lock."""

    def __init__(self, store: RunStore, experiment: str, run_id: str) -> None:
        self.store = store
        self.what = f"run {run_id!r} of {experiment!r}"
        self.tally = current_tally()  # the client's share, inside a server's call
        self.held = 0  # reserved in the budget
        self.credit = 0  # reserved but not yet charged

    @property
    def used(self) -> int:
        """What the parse has charged and not refunded."""
        return self.held - self.credit

    def __call__(self, nbytes: int) -> None:
        if nbytes >= 0:
            self.charge(nbytes)
        else:
            self.refund(-nbytes)

    def charge(self, nbytes: int) -> None:
        if nbytes <= self.credit:
            self.credit -= nbytes
            return
        budget = self.store.budget
        limit = budget.limit
        share = self.tally.share if self.tally is not None else None
        need = nbytes - self.credit
        if limit is not None and self.held + need > limit:
            raise RunTooLarge(
                f"parsing it takes more than {mib(limit)} of memory, the most this reader "
                f"gives parsed runs ({MEMORY_FLAG})"
            )
        if share is not None and self.held + need > share:
            raise RunTooLarge(
                f"parsing it takes more than {mib(share)} of memory, the most one client's "
                f"calls may hold (half of {MEMORY_FLAG})"
            )
        step = max(need, METER_STEP)
        if limit is not None:
            step = min(step, limit - self.held)
        if share is not None:
            step = min(step, share - self.held)
        step = self._reserve(step, need)
        self.held += step
        self.credit += step - nbytes

    def _reserve(self, step: int, need: int) -> int:
        """Reserve `step` bytes (or, short of room, `need`) in the client's share and the
        budget; what was reserved. ReaderBusy when even `need` does not fit."""
        tally = self.tally
        if tally is not None and not tally.try_add(step):
            step = need
            if not tally.try_add(step):
                assert tally.share is not None
                raise ReaderBusy(
                    f"this client's calls in flight hold {mib(tally.shares.used(tally.key))} "
                    f"of parsed runs, their share of this server's memory (half of "
                    f"{MEMORY_FLAG}), and reading {self.what} needs more: wait for their "
                    "answers, or compare fewer runs at once"
                )
        budget = self.store.budget
        while not budget.try_reserve(step):
            if step > need and budget.try_reserve(need):  # no room for a step: what it needs
                if tally is not None:
                    tally.sub(step - need)
                return need
            if not self.store.evict_oldest():
                if tally is not None:
                    tally.sub(step)
                assert budget.limit is not None
                raise ReaderBusy(
                    f"parsed runs in use take {mib(budget.used)} of the {mib(budget.limit)} "
                    f"this server gives them ({MEMORY_FLAG}), and reading {self.what} needs "
                    "more: try again when other calls have finished, or compare fewer runs"
                )
        return step

    def refund(self, nbytes: int) -> None:
        self.credit += nbytes
        if self.credit > 2 * METER_STEP:
            self._give_back(self.credit - METER_STEP)

    def settle(self) -> int:
        """Give back the unused credit; what stays reserved (the parsed run's size)."""
        self._give_back(self.credit)
        return self.held

    def release(self) -> None:
        self._give_back(self.held)

    def _give_back(self, nbytes: int) -> None:
        self.store.budget.release(nbytes)
        if self.tally is not None:
            self.tally.sub(nbytes)
        self.held -= nbytes
        self.credit = max(0, self.credit - nbytes)


def _let_go(run: Run) -> None:
    """The calling call holds `run` no more: its client's share gets its part back."""
    tally = current_tally()
    if tally is not None:
        tally.let_go(run)


def _os_reason(exc: OSError) -> str:
    """What went wrong reading a file, without the store's absolute path."""
    if exc.strerror:
        return exc.strerror  # e.g. "Permission denied"; the path is in exc.filename only
    return str(exc) or type(exc).__name__


def _parse_run(folder: Files, experiment: str, run_id: str, meter: _Meter) -> Run:
    summary_raw = _read_file(folder, SUMMARY, meter)
    summary = None if summary_raw is None else _parse_json(summary_raw, parse_summary, meter)
    raw_config = _read_file(folder, CONFIG, meter)
    if raw_config is None:
        if summary is not None and summary.status == "failed":
            # A run can fail before it writes its config (a worker lost at start).
            warning = "config.json is missing: the run failed before writing it"
            return Run(experiment, run_id, None, (), summary, (warning,))
        if summary is None and not folder.is_file(METRICS):
            # The writer makes the folder (and checkpoints/) before config.json.
            return Run(experiment, run_id, None, (), None, ("starting: no config.json yet",))
        raise MalformedRun("config.json is missing")
    record = _parse_json(raw_config, parse_config_record, meter)
    raw_metrics = _read_file(folder, METRICS, meter)
    if raw_metrics is None:
        if summary is not None and summary.status == "completed":
            raise MalformedRun("completed, but metrics.jsonl is missing")
        raw_metrics = b""
    epochs, warnings = parse_metrics(raw_metrics, account=meter)
    meter.refund(len(raw_metrics))
    return Run(experiment, run_id, record, tuple(epochs), summary, tuple(warnings))


def _read_file(folder: Files, name: str, meter: _Meter) -> bytes | None:
    """A run file's bytes, charged to the meter (refunded by whoever parses them)."""
    size = folder.size(name)
    expected = size[0] if size is not None else 0
    meter.charge(expected)
    data = folder.read_bytes(name)
    got = 0 if data is None else len(data)
    meter(got - expected)  # it changed since it was measured
    return data


def _parse_json(data: bytes, parse: Any, meter: _Meter) -> Any:
    """Parse a JSON file's bytes under the meter: the parse's bound while it runs, then
    what the record keeps; the bytes themselves are refunded."""
    bound = json_bound(data)
    meter.charge(bound)
    try:
        record = parse(data)
    finally:
        meter.refund(bound + len(data))
    meter.charge(_record_size(record))
    return record


def _record_size(record: Any) -> int:
    """What a ConfigRecord or SummaryRecord takes: the object and every value in it."""
    return sys.getsizeof(record) + json_size(list(vars(record).values()))
