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
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runstore.errors import ExperimentNotFound, MalformedRun, RunNotFound
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
DEFAULT_CACHE_RUNS = 512
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
        cache_runs: int = DEFAULT_CACHE_RUNS,
    ) -> None:
        self.files = root if isinstance(root, Files) else open_files(root)
        self.max_file_bytes = max_file_bytes
        self._cache: OrderedDict[tuple[str, str], tuple[Any, Run]] = OrderedDict()
        self._cache_runs = cache_runs
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
        """Read every run of an experiment; malformed runs are listed, never raised."""
        runs: list[Run] = []
        malformed: list[Skipped] = []
        for run_id in self.run_ids(experiment):
            try:
                runs.append(self._read(experiment, run_id))
            except MalformedRun as exc:
                malformed.append(Skipped(experiment, run_id, f"malformed: {exc}"))
            except OSError as exc:  # permissions, a file system hiccup: this run only
                reason = _os_reason(exc)
                malformed.append(Skipped(experiment, run_id, f"unreadable: {reason}"))
        return Scan(tuple(runs), tuple(malformed))

    def run(self, experiment: str, run_id: str) -> Run:
        """One run; RunNotFound if absent, MalformedRun if unreadable."""
        self._check_exists(experiment, run_id)
        try:
            return self._read(experiment, run_id)
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
        stamp = tuple(folder.size(name) for name in (CONFIG, METRICS, SUMMARY))
        key = (experiment, run_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == stamp:
                self._cache.move_to_end(key)
                return cached[1]
        for name, size in zip((CONFIG, METRICS, SUMMARY), stamp, strict=True):
            if size is not None and size[0] > self.max_file_bytes:
                raise MalformedRun(
                    f"{name} is {size[0] / 2**20:.1f} MiB, over the reader's limit of "
                    f"{self.max_file_bytes / 2**20:.1f} MiB (--max-run-file-mb)"
                )
        run = _parse_run(folder, experiment, run_id)
        if None not in stamp[:1]:  # cache runs whose config exists (a starting run changes)
            with self._lock:
                self._cache[key] = (stamp, run)
                while len(self._cache) > self._cache_runs:
                    self._cache.popitem(last=False)
        return run


def _os_reason(exc: OSError) -> str:
    """What went wrong reading a file, without the store's absolute path."""
    if exc.strerror:
        return exc.strerror  # e.g. "Permission denied"; the path is in exc.filename only
    return str(exc) or type(exc).__name__


def _parse_run(folder: Files, experiment: str, run_id: str) -> Run:
    summary_raw = folder.read_bytes(SUMMARY)
    summary = None if summary_raw is None else parse_summary(summary_raw)
    raw_config = folder.read_bytes(CONFIG)
    if raw_config is None:
        if summary is not None and summary.status == "failed":
            # A run can fail before it writes its config (a worker lost at start).
            warning = "config.json is missing: the run failed before writing it"
            return Run(experiment, run_id, None, (), summary, (warning,))
        if summary is None and not folder.is_file(METRICS):
            # The writer makes the folder (and checkpoints/) before config.json.
            return Run(experiment, run_id, None, (), None, ("starting: no config.json yet",))
        raise MalformedRun("config.json is missing")
    record = parse_config_record(raw_config)
    raw_metrics = folder.read_bytes(METRICS)
    if raw_metrics is None:
        if summary is not None and summary.status == "completed":
            raise MalformedRun("completed, but metrics.jsonl is missing")
        raw_metrics = b""
    epochs, warnings = parse_metrics(raw_metrics)
    return Run(experiment, run_id, record, tuple(epochs), summary, tuple(warnings))
