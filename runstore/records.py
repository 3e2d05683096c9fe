"""The records of a run folder, one type per file, used by the writer and the readers.

- `ConfigRecord`: config.json, written once when the run starts.
- `EpochRecord`: one line of metrics.jsonl per epoch.
- `SummaryRecord`: summary.json, written once when the run ends.

`to_json()` is what the writer stores; `parse_*` is what every reader uses. Parsing
is strict about types (a number that is a string breaks the format) and lenient
about the rest: unknown fields are ignored, absent ones are None. Anything a parser
can raise becomes `MalformedRun`, so one bad file never breaks a call about other
runs. docs/formats.md is tested against these fields (tests/runstore).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from runstore.budget import json_bound
from runstore.errors import MalformedRun

# The format's version; config.json and summary.json say which they follow ("schema",
# absent: 1). 2: summary.json's `failure` says how a failed run failed (before it, only
# the reason's text told a diverged run from a crashed one).
SCHEMA_VERSION = 2
FIRST_SCHEMA = 1  # what a file without "schema" follows
# The longest line of metrics.jsonl a reader takes: an epoch of a model with thousands of
# layers is tens of kB. A reader holds a line whole while it parses it (and a follower
# while the line is being written), so this bounds what one line can cost it.
MAX_LINE_BYTES = 2**20


@dataclass(frozen=True)
class ConfigRecord:
    """config.json: the resolved config and what produced the run."""

    experiment: str
    run_id: str
    created_at: str
    config: Mapping[str, Any]  # the whole resolved run config, nested as in the YAML
    config_hash: str = ""  # sha256 of the canonical JSON of `config`, first 16 hex
    grid: Mapping[str, Any] = field(default_factory=dict)  # the swept values of this run
    code_version: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)  # python, torch, ray, ...
    effective: Mapping[str, Any] = field(default_factory=dict)  # workers, batch, lr, device
    data: Mapping[str, Any] = field(default_factory=dict)  # shapes, classes, mean, std
    # The model's layers in depth order: {"name", "kind", "params"}; kind is conv,
    # linear, batch_norm, batch_norm1d, activation, pool, ... (what `stride models`
    # prints). The analysis reads which grad_norms layers are weight layers from it.
    layers: tuple[Mapping[str, Any], ...] = ()
    schema: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()


@dataclass(frozen=True)
class EpochRecord:
    """One line of metrics.jsonl."""

    epoch: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None
    epoch_seconds: float | None = None
    elapsed_seconds: float | None = None  # training seconds since the run began
    images_per_second: float | None = None  # training throughput of the epoch
    grad_norms: tuple[tuple[str, float], ...] = ()  # (layer, mean norm), input side first
    # (activation layer, fraction of its units that are dead on a fixed validation
    # batch: zero output for ReLU, the flat part for a saturating activation)
    dead_units: tuple[tuple[str, float], ...] = ()
    weight_norm: float | None = None  # L2 norm of every conv and linear weight together

    def to_line(self) -> str:
        record: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        record["grad_norms"] = [{"layer": n, "norm": v} for n, v in self.grad_norms]
        record["dead_units"] = [{"layer": n, "fraction": v} for n, v in self.dead_units]
        return json.dumps(record, separators=(",", ":")) + "\n"


@dataclass(frozen=True)
class SummaryRecord:
    """summary.json: how the run ended. `val_*` are the kept model's validation figures
    (what a sweep selects by), `test_*` its test figures (reported, never selected by)."""

    status: str  # completed, failed or stopped (by a sweep's scheduler)
    reason: str | None = None  # why it failed or was stopped
    val_loss: float | None = None
    val_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    best_epoch: int | None = None
    best_metric: str | None = None
    best_value: float | None = None
    epochs_run: int | None = None
    stopped_early: bool = False
    wall_seconds: float | None = None
    train_seconds: float | None = None
    device: str | None = None
    precision: str | None = None
    workers: int | None = None
    resumed_from_epoch: int | None = None  # the last restart's checkpoint, if any
    finished_at: str | None = None
    stopped_by: str | None = None  # the scheduler that stopped it (status "stopped"): asha
    stopped_at_epoch: int | None = None  # the last epoch it trained before being stopped
    skipped_images: int | None = None  # unreadable images left out (data.max_bad_fraction)
    # How a failed run failed (status "failed" only; FAILURES): "diverged" when its loss
    # became non-finite, "error" when anything else ended it. None on older files.
    failure: str | None = None
    schema: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()


# running: no summary.json yet; stopped: a sweep's scheduler ended it early (ASHA)
STATUSES = ("completed", "failed", "stopped", "running")
# summary.json's `failure`: diverged, the training's own result (its loss became
# non-finite); error, anything outside it (an exception, a worker lost, bad data).
FAILURES = ("diverged", "error")
_NUMBER_FIELDS = {
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_seconds",
    "elapsed_seconds",
    "images_per_second",
    "test_loss",
    "test_accuracy",
    "best_value",
    "wall_seconds",
    "train_seconds",
    "weight_norm",
}
_INT_FIELDS = {
    "epoch",
    "best_epoch",
    "epochs_run",
    "workers",
    "resumed_from_epoch",
    "stopped_at_epoch",
    "skipped_images",
    "schema",
}
_TEXT_FIELDS = {
    "status",
    "reason",
    "best_metric",
    "device",
    "precision",
    "finished_at",
    "stopped_by",
    "failure",
}


def load_object(data: bytes, name: str) -> dict[str, Any]:
    """A JSON object from a run file; MalformedRun for anything else."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError: bad JSON, bad UTF-8, an integer of more than 4,300 digits, ...
        raise MalformedRun(f"{name} is not valid JSON ({_short(exc)})") from None
    if not isinstance(value, dict):
        raise MalformedRun(f"{name} is not a JSON object")
    return value


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _checked(obj: Mapping[str, Any], key: str, where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if key in _NUMBER_FIELDS or key in _INT_FIELDS:
        integral = key in _INT_FIELDS
        if isinstance(value, bool) or not isinstance(value, int if integral else int | float):
            kind = "an integer" if integral else "a number"
            raise MalformedRun(f"{where}: {key} is {value!r:.80}, not {kind}")
        return value if integral else float(value)
    if key in _TEXT_FIELDS and not isinstance(value, str):
        raise MalformedRun(f"{where}: {key} is {value!r:.80}, not a string")
    return value


def _schema(obj: Mapping[str, Any], where: str) -> int:
    schema = _checked(obj, "schema", where)
    if schema is None:
        return FIRST_SCHEMA  # written before the field existed
    if schema > SCHEMA_VERSION:
        raise MalformedRun(
            f"{where}: schema {schema} is newer than this reader's {SCHEMA_VERSION}; "
            "upgrade Stride to read it"
        )
    return int(schema)


def _mapping(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedRun(f"{where}: '{key}' is not an object")
    return value


def parse_config_record(data: bytes) -> ConfigRecord:
    where = "config.json"
    obj = load_object(data, where)
    return ConfigRecord(
        experiment=str(obj.get("experiment") or ""),
        run_id=str(obj.get("run_id") or ""),
        created_at=str(obj.get("created_at") or ""),
        config=_mapping(obj, "config", where),
        config_hash=str(obj.get("config_hash") or ""),
        grid=_mapping(obj, "grid", where),
        code_version=str(obj.get("code_version") or ""),
        versions=_mapping(obj, "versions", where),
        effective=_mapping(obj, "effective", where),
        data=_mapping(obj, "data", where),
        layers=_layers(obj.get("layers"), where),
        schema=_schema(obj, where),
    )


def _layers(value: Any, where: str) -> tuple[Mapping[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedRun(f"{where}: layers is not a list")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedRun(f"{where}: layers entry {item!r:.80} has no name")
        if not isinstance(item.get("kind"), str):
            raise MalformedRun(f"{where}: layers entry {item['name']!r:.80} has no kind")
    return tuple(value)


def parse_summary(data: bytes) -> SummaryRecord:
    where = "summary.json"
    obj = load_object(data, where)
    status = obj.get("status")
    if not isinstance(status, str) or not status:
        raise MalformedRun(f"{where}: status is {status!r:.80}, not a string")
    values = {
        f.name: _checked(obj, f.name, where)
        for f in fields(SummaryRecord)
        if f.name not in ("status", "stopped_early", "schema")
    }
    failure = values["failure"]
    if failure is not None and failure not in FAILURES:
        raise MalformedRun(f"{where}: failure is {failure!r:.80}, not one of {', '.join(FAILURES)}")
    if failure is not None and status != "failed":
        raise MalformedRun(f"{where}: failure {failure!r} on a run whose status is {status!r:.80}")
    return SummaryRecord(
        status=status,
        stopped_early=bool(obj.get("stopped_early", False)),
        schema=_schema(obj, where),
        **values,
    )


def parse_epoch(line: str | bytes, where: str, names: dict[str, str] | None = None) -> EpochRecord:
    """One metrics.jsonl line; MalformedRun names what is wrong. `names` shares layer
    names between the lines of one file (each line would otherwise hold its own copies)."""
    data = line if isinstance(line, bytes) else line.encode("utf-8", errors="replace")
    if len(data) > MAX_LINE_BYTES:
        raise MalformedRun(
            f"{where} is {len(data):,} bytes, longer than the {MAX_LINE_BYTES:,} bytes "
            "a line may be"
        )
    obj = load_object(data, where)
    epoch = _checked(obj, "epoch", where)
    if epoch is None:
        raise MalformedRun(f"{where} has no epoch")
    values = {
        f.name: _checked(obj, f.name, where)
        for f in fields(EpochRecord)
        if f.name not in ("epoch", "grad_norms", "dead_units")
    }
    return EpochRecord(
        epoch=epoch,
        grad_norms=_per_layer(obj.get("grad_norms"), "grad_norms", "norm", where, names),
        dead_units=_per_layer(obj.get("dead_units"), "dead_units", "fraction", where, names),
        **values,
    )


def _per_layer(
    value: Any, key: str, number: str, where: str, names: dict[str, str] | None
) -> tuple[tuple[str, float], ...]:
    """[{"layer": name, <number>: value}, ...] as ((name, value), ...); null is NaN."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedRun(f"{where}: {key} is not a list")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("layer"), str):
            raise MalformedRun(f"{where}: {key} entry {item!r:.80} has no layer name")
        v = item.get(number)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise MalformedRun(f"{where}: {key} {number} {v!r:.80} is not a number")
        name = item["layer"]
        if names is not None:
            name = names.setdefault(name, name)
        out.append((name, math.nan if v is None else float(v)))
    return tuple(out)


def parse_metrics(
    data: bytes, *, account: Callable[[int], None] | None = None
) -> tuple[list[EpochRecord], list[str]]:
    """metrics.jsonl as epochs 1, 2, 3, ... and the warnings met on the way.

    Writers append whole lines, so only the last line can be incomplete: when it does
    not parse it is skipped with a warning. Any other bad line, a line longer than
    MAX_LINE_BYTES, a gap, a repeated epoch or a decreasing one makes the run malformed.

    `account(nbytes)` is told what parsing costs as it goes (runstore.budget): before a
    line is parsed, an upper bound of what parsing it may allocate; after, that bound
    back (a negative number) and what the record kept takes. It may raise to stop.
    """
    epochs: list[EpochRecord] = []
    warnings: list[str] = []
    names: dict[str, str] = {}
    start, number = 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        last = end < 0
        line = data[start:] if last else data[start:end]
        start = len(data) if last else end + 1
        number += 1
        if not line.strip():
            continue
        where = f"metrics.jsonl line {number}"
        bound = json_bound(line) if account is not None and len(line) <= MAX_LINE_BYTES else 0
        if account is not None:
            account(bound)
        known = len(names)
        try:
            epoch = parse_epoch(line, where, names)
        except MalformedRun:
            if not last or len(line) > MAX_LINE_BYTES:
                raise
            warnings.append(f"metrics.jsonl: truncated last line {number} skipped")
            continue
        finally:
            if account is not None:
                account(-bound)
        if account is not None:
            fresh = itertools.islice(reversed(names), len(names) - known)  # this line's new
            account(epoch_size(epoch) + sum(sys.getsizeof(n) for n in fresh))
        epochs.append(epoch)
    for expected, epoch in enumerate(epochs, start=1):
        if epoch.epoch != expected:
            raise MalformedRun(
                f"metrics.jsonl: epoch {epoch.epoch} where epoch {expected} was expected"
            )
    return epochs, warnings


_EPOCH_FLOATS = tuple(
    f.name for f in fields(EpochRecord) if f.name in _NUMBER_FIELDS and f.name != "epoch"
)
_EXAMPLE = EpochRecord(1)
_RECORD_BYTES = sys.getsizeof(_EXAMPLE) + sys.getsizeof(_EXAMPLE.__dict__)
_FLOAT_BYTES = sys.getsizeof(1.0)
_PAIR_BYTES = sys.getsizeof((None, None)) + 8  # the pair and its slot in the tuple
_TUPLE_BYTES = sys.getsizeof(())


def epoch_size(epoch: EpochRecord) -> int:
    """The bytes an EpochRecord takes in memory (its layer names aside: parse_metrics
    shares them between lines and counts each once)."""
    floats = sum(getattr(epoch, name) is not None for name in _EPOCH_FLOATS)
    pairs = len(epoch.grad_norms) + len(epoch.dead_units)
    big_epoch = sys.getsizeof(epoch.epoch) if epoch.epoch > 256 else 0  # small ints are shared
    return (
        _RECORD_BYTES
        + floats * _FLOAT_BYTES
        + 2 * _TUPLE_BYTES
        + pairs * (_PAIR_BYTES + _FLOAT_BYTES)
        + big_epoch
    )
