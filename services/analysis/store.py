"""Read the run store (docs/formats.md) into plain, immutable records.

The reader is tolerant by design: it is pointed at folders that training is
still writing, at runs that crashed, and at files written by other versions.

- A run without `summary.json` is `running`; `failed` runs are read like others.
- A truncated last line of `metrics.jsonl` (a crash mid-write) is skipped with a
  warning; unknown fields anywhere are ignored.
- Anything else that breaks the format (malformed JSON, a missing config.json,
  a number that is a string, epochs out of order) makes the run *malformed*: it
  is reported with the reason and skipped, and never raises out of a scan.

Only JSON is parsed; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.analysis.errors import (
    ExperimentNotFound,
    InvalidRequest,
    MalformedRunError,
    RunNotFound,
)
from services.analysis.location import Location, open_location

# docs/formats.md: writers use [A-Za-z0-9][A-Za-z0-9._-]{0,127}. The reader is more
# lenient (older stores had "=" in sweep ids): it only needs names that stay inside
# their folder, so it accepts any printable name without a path separator.
NAME_RE = re.compile(r"[A-Za-z0-9][^/\\\x00-\x1f]{0,254}")
NAME_MAX_BYTES = 255  # a folder name's limit on the usual file systems (NAME_MAX)
STATUSES = ("completed", "failed", "running")
EPOCH_FIELDS = (
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_seconds",
    "elapsed_seconds",
    "images_per_second",
)
_MISSING = object()


@dataclass(frozen=True)
class Epoch:
    """One line of metrics.jsonl (fields absent or null in the file are None)."""

    epoch: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None
    epoch_seconds: float | None = None
    elapsed_seconds: float | None = None
    images_per_second: float | None = None
    grad_norms: tuple[tuple[str, float], ...] = ()  # (layer, norm), input side first


@dataclass(frozen=True)
class Summary:
    """summary.json, written once when a run ends."""

    status: str
    reason: str | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    best_epoch: int | None = None
    best_metric: str | None = None
    best_value: float | None = None
    epochs_run: int | None = None
    stopped_early: bool = False
    wall_seconds: float | None = None
    device: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class Run:
    """A readable run: its config.json, its epochs so far and its summary if it ended."""

    experiment: str
    run_id: str
    meta: Mapping[str, Any]  # the whole config.json
    epochs: tuple[Epoch, ...]
    summary: Summary | None
    warnings: tuple[str, ...] = ()

    @property
    def config(self) -> Mapping[str, Any]:
        """The resolved run config (config.json's `config`)."""
        value = self.meta.get("config")
        return value if isinstance(value, Mapping) else {}

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
        grid = self.meta.get("grid")
        return grid if isinstance(grid, Mapping) else {}

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


def check_name(kind: str, name: str) -> str:
    """Return `name` if it is a valid experiment or run id, else raise InvalidRequest."""
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"{kind} {name!r} is not a valid name (a letter or digit, then up to 254 "
            "characters without '/', '\\' or control characters)"
        )
    if len(name.encode("utf-8")) > NAME_MAX_BYTES:
        raise InvalidRequest(
            f"{kind} {name!r} is {len(name.encode('utf-8'))} bytes in UTF-8; a folder name "
            f"has at most {NAME_MAX_BYTES} bytes"
        )
    return name


class RunStore:
    """Read-only access to `RUNS/<experiment>/<run-id>/` under a path or URI."""

    def __init__(self, root: str | Location) -> None:
        self.location = open_location(root) if isinstance(root, str) else root

    @property
    def root(self) -> str:
        """The path or URI the store was opened with."""
        return self.location.root

    def experiments(self) -> list[str]:
        """Names of the experiments (folders with a valid name) in the store."""
        return [n for n in self.location.list_dirs() if NAME_RE.fullmatch(n)]

    def run_ids(self, experiment: str) -> list[str]:
        """Run folders of an experiment (hidden and temporary folders left out)."""
        check_name("experiment", experiment)
        if not self.location.is_dir(experiment):
            raise ExperimentNotFound(
                f"experiment {experiment!r} not found in {self.root} "
                f"(experiments: {', '.join(self.experiments()) or 'none'})"
            )
        return [n for n in self.location.list_dirs(experiment) if not n.startswith(".")]

    def scan(self, experiment: str) -> Scan:
        """Read every run of an experiment; malformed runs are listed, never raised."""
        runs: list[Run] = []
        malformed: list[Skipped] = []
        for run_id in self.run_ids(experiment):
            try:
                runs.append(self._read(experiment, run_id))
            except MalformedRunError as exc:
                malformed.append(Skipped(experiment, run_id, f"malformed: {exc}"))
            except OSError as exc:  # permissions, a file system hiccup: this run only
                malformed.append(Skipped(experiment, run_id, f"unreadable: {exc}"))
        return Scan(tuple(runs), tuple(malformed))

    def run(self, experiment: str, run_id: str) -> Run:
        """One run; RunNotFound if absent, MalformedRunError if unreadable."""
        check_name("experiment", experiment)
        check_name("run id", run_id)
        if not self.location.is_dir(experiment, run_id):
            if not self.location.is_dir(experiment):
                self.run_ids(experiment)  # raises ExperimentNotFound with the list
            raise RunNotFound(f"run {run_id!r} not found in experiment {experiment!r}")
        try:
            return self._read(experiment, run_id)
        except MalformedRunError as exc:
            raise MalformedRunError(
                f"run {run_id!r} of {experiment!r} is malformed: {exc}"
            ) from None

    def read_summary(self, experiment: str, run_id: str) -> Summary | None:
        """summary.json of a run, or None while it is absent."""
        data = self.location.read_bytes(experiment, run_id, "summary.json")
        return None if data is None else parse_summary(data)

    def read_metrics_from(self, experiment: str, run_id: str, offset: int) -> bytes:
        """The bytes of metrics.jsonl from `offset` on (empty while it is absent or shorter).

        A resumed run rewrites the file shorter, so a follower may ask past its end. A
        local file then reads as empty, but object stores refuse to seek there (pyarrow
        raises OSError); the file is then read whole and cut, so every location answers
        the same.
        """
        name = "metrics.jsonl"
        try:
            data = self.location.read_bytes(experiment, run_id, name, offset=offset)
        except OSError:
            if offset == 0:
                raise
            whole = self.location.read_bytes(experiment, run_id, name)  # raises if truly broken
            data = None if whole is None else whole[offset:]
        return data or b""

    def _read(self, experiment: str, run_id: str) -> Run:
        if not NAME_RE.fullmatch(run_id):
            raise MalformedRunError(f"folder name {run_id!r} is not a valid run id")
        raw_config = self.location.read_bytes(experiment, run_id, "config.json")
        summary = self.read_summary(experiment, run_id)
        if raw_config is None:
            if summary is not None and summary.status == "failed":
                # A run can fail before it writes its config (a worker lost at start).
                warning = "config.json is missing: the run failed before writing it"
                return Run(experiment, run_id, {}, (), summary, (warning,))
            if summary is None and self._starting(experiment, run_id):
                # The writer makes the folder (and checkpoints/) before config.json.
                return Run(experiment, run_id, {}, (), None, ("starting: no config.json yet",))
            raise MalformedRunError("config.json is missing")
        meta = _load_object(raw_config, "config.json")
        if "config" in meta and not isinstance(meta["config"], Mapping):
            raise MalformedRunError("config.json: 'config' is not an object")
        raw_metrics = self.location.read_bytes(experiment, run_id, "metrics.jsonl")
        if raw_metrics is None:
            if summary is not None and summary.status == "completed":
                raise MalformedRunError("completed, but metrics.jsonl is missing")
            raw_metrics = b""
        epochs, warnings = parse_metrics(raw_metrics)
        return Run(experiment, run_id, meta, tuple(epochs), summary, tuple(warnings))

    def _starting(self, experiment: str, run_id: str) -> bool:
        """A run folder with none of its files yet: a run that is starting."""
        names = ("metrics.jsonl", "summary.json")
        return not any(self.location.is_file(experiment, run_id, n) for n in names)


def _load_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRunError(f"{name} is not valid JSON ({exc})") from None
    except RecursionError:
        raise MalformedRunError(f"{name} is nested too deeply to be a run file") from None
    if not isinstance(value, dict):
        raise MalformedRunError(f"{name} is not a JSON object")
    return value


def _number(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedRunError(f"{where}: {key} is {value!r}, not a number")
    return float(value)


def _integer(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedRunError(f"{where}: {key} is {value!r}, not an integer")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedRunError(f"{where}: {key} is {value!r}, not a string")
    return value


def parse_summary(data: bytes) -> Summary:
    """Parse summary.json; MalformedRunError names what is wrong."""
    obj = _load_object(data, "summary.json")
    where = "summary.json"
    status = obj.get("status")
    if not isinstance(status, str) or not status:
        raise MalformedRunError(f"{where}: status is {status!r}, not a string")
    return Summary(
        status=status,
        reason=_text(obj, "reason", where),
        test_loss=_number(obj, "test_loss", where),
        test_accuracy=_number(obj, "test_accuracy", where),
        best_epoch=_integer(obj, "best_epoch", where),
        best_metric=_text(obj, "best_metric", where),
        best_value=_number(obj, "best_value", where),
        epochs_run=_integer(obj, "epochs_run", where),
        stopped_early=bool(obj.get("stopped_early", False)),
        wall_seconds=_number(obj, "wall_seconds", where),
        device=_text(obj, "device", where),
        finished_at=_text(obj, "finished_at", where),
    )


def parse_epoch(line: str, where: str) -> Epoch:
    """Parse one metrics.jsonl line; MalformedRunError names what is wrong."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise MalformedRunError(f"{where} is not valid JSON ({exc})") from None
    except RecursionError:
        raise MalformedRunError(f"{where} is nested too deeply to be a metrics line") from None
    if not isinstance(obj, dict):
        raise MalformedRunError(f"{where} is not a JSON object")
    epoch = _integer(obj, "epoch", where)
    if epoch is None:
        raise MalformedRunError(f"{where} has no epoch")
    values = {name: _number(obj, name, where) for name in EPOCH_FIELDS}
    return Epoch(epoch=epoch, grad_norms=_grad_norms(obj.get("grad_norms"), where), **values)


def _grad_norms(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedRunError(f"{where}: grad_norms is not a list")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("layer"), str):
            raise MalformedRunError(f"{where}: grad_norms entry {item!r} has no layer name")
        norm = _number(item, "norm", where)
        out.append((item["layer"], math.nan if norm is None else norm))
    return tuple(out)


def parse_metrics(data: bytes) -> tuple[list[Epoch], list[str]]:
    """Parse metrics.jsonl into epochs 1, 2, 3, ... and the warnings met on the way.

    Writers append whole lines, so only the last line can be incomplete: when it
    does not parse it is skipped with a warning. Any other bad line, a gap, a
    repeated epoch or a decreasing one makes the run malformed.
    """
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    tail = lines.pop()  # text after the last newline: "" when the file ends cleanly
    epochs: list[Epoch] = []
    warnings: list[str] = []
    numbered: Iterable[tuple[int, str]] = enumerate(lines, start=1)
    for number, line in numbered:
        if line.strip():
            epochs.append(parse_epoch(line, f"metrics.jsonl line {number}"))
    if tail.strip():
        try:
            epochs.append(parse_epoch(tail, f"metrics.jsonl line {len(lines) + 1}"))
        except MalformedRunError:
            warnings.append(f"metrics.jsonl: truncated last line {len(lines) + 1} skipped")
    for expected, epoch in enumerate(epochs, start=1):
        if epoch.epoch != expected:
            raise MalformedRunError(
                f"metrics.jsonl: epoch {epoch.epoch} where epoch {expected} was expected"
            )
    return epochs, warnings


def select_runs(
    runs: Iterable[Run], *, statuses: Iterable[str] = (), where: Iterable[str] = ()
) -> list[Run]:
    """Runs whose status is in `statuses` (all when empty) and that match every KEY=VALUE."""
    wanted = set(statuses)
    unknown = wanted - set(STATUSES)
    if unknown:
        raise InvalidRequest(
            f"unknown status {sorted(unknown)[0]!r}; allowed: {', '.join(STATUSES)}"
        )
    filters = [parse_filter(f) for f in where]
    return [
        r
        for r in runs
        if (not wanted or r.status in wanted) and all(r.label(k) == v for k, v in filters)
    ]


def parse_filter(text: str) -> tuple[str, str]:
    """Split `key=value` (a dotted config key); InvalidRequest when it is not of that form."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidRequest(f"filter {text!r} is not KEY=VALUE (e.g. optimizer.name=adam)")
    return key.strip(), value.strip()
