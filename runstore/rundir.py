"""One run's folder: RUNS/<experiment>/<run-id>/ (docs/formats.md).

Files are replaced atomically and metric lines appended whole, so a reader of a
running or crashed run never sees half a record. Training writes through this class
and every reader (the analysis service, `stride compare`, the sweep's live view)
reads through it or through `runstore.reader`, with the same records.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from runstore.errors import MalformedRun
from runstore.files import Files, open_files
from runstore.location import StoreLocation
from runstore.names import check_name
from runstore.records import (
    ConfigRecord,
    EpochRecord,
    SummaryRecord,
    parse_config_record,
    parse_metrics,
    parse_summary,
)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"


class RunDir:
    """One run's folder in the run store (a local folder or a prefix of an object store)."""

    def __init__(self, location: str | os.PathLike[str] | StoreLocation | Files) -> None:
        self.files = location if isinstance(location, Files) else open_files(location)
        parts = self.files.display.rstrip("/").split("/")
        self.name = parts[-1]
        self.experiment = parts[-2] if len(parts) > 1 else ""

    @classmethod
    def at(
        cls, root: str | os.PathLike[str] | StoreLocation | Files, experiment: str, run_id: str
    ) -> RunDir:
        """An existing (or future) run, without creating anything."""
        files = root if isinstance(root, Files) else open_files(root)
        return cls(files.child(check_name("experiment", experiment), check_name("run id", run_id)))

    @classmethod
    def create(
        cls, root: str | os.PathLike[str] | StoreLocation | Files, experiment: str, run_id: str
    ) -> RunDir:
        """The run's folder, made now on a local disk (an object store has no folders)."""
        run = cls.at(root, experiment, run_id)
        local = run.local_path
        if local is not None:
            (local / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        return run

    def __str__(self) -> str:
        return self.files.display

    @property
    def local_path(self) -> Path | None:
        return self.files.local_path()

    @property
    def path(self) -> Path:
        """The run's local folder (ValueError for an object store; see `files`)."""
        local = self.local_path
        if local is None:
            raise ValueError(f"run {self}: not a local folder")
        return local

    @property
    def checkpoints(self) -> Path:
        """The local checkpoints/ folder (ValueError for an object store)."""
        return self.path / CHECKPOINTS

    def exists(self) -> bool:
        return self.files.is_file(CONFIG)

    # ------------------------------------------------------------ config.json

    def write_config(self, record: ConfigRecord) -> None:
        self.files.write_bytes(CONFIG, record.to_json())

    def read_config(self) -> ConfigRecord:
        """config.json; FileNotFoundError when absent, MalformedRun when unreadable."""
        raw = self.files.read_bytes(CONFIG)
        if raw is None:
            raise FileNotFoundError(f"{self}/{CONFIG} does not exist")
        with self._named():
            return parse_config_record(raw)

    # ------------------------------------------------------------ metrics.jsonl

    def append_metrics(self, record: EpochRecord) -> None:
        self.files.append_line(METRICS, record.to_line())

    def read_metrics(self) -> list[EpochRecord]:
        """Every epoch so far (a truncated last line is skipped)."""
        with self._named():
            return parse_metrics(self.files.read_bytes(METRICS) or b"")[0]

    def read_metrics_from(self, offset: int, length: int | None = None) -> bytes:
        """metrics.jsonl's bytes from `offset` on, at most `length` of them (empty while
        it is absent or shorter)."""
        return self.files.read_bytes(METRICS, offset, length) or b""

    def keep_metrics_through(self, epoch: int) -> None:
        """Drop lines after `epoch` (a resumed run redoes them), atomically."""
        kept = [r for r in self.read_metrics() if r.epoch <= epoch]
        self.files.write_bytes(METRICS, "".join(r.to_line() for r in kept).encode())

    # ------------------------------------------------------------ summary.json

    def write_summary(self, record: SummaryRecord) -> None:
        self.files.write_bytes(SUMMARY, record.to_json())

    def read_summary(self) -> SummaryRecord | None:
        """summary.json, or None while the run goes on."""
        raw = self.files.read_bytes(SUMMARY)
        if raw is None:
            return None
        with self._named():
            return parse_summary(raw)

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """A format error that says which run it is about."""
        try:
            yield
        except MalformedRun as exc:
            raise MalformedRun(f"{self}: {exc}") from None

    def delete_summary(self) -> None:
        self.files.delete(SUMMARY)

    # ------------------------------------------------------------ checkpoints/

    def write_checkpoint_file(self, name: str, data: bytes) -> None:
        """checkpoints/<name>, replaced whole."""
        self.files.write_bytes(f"{CHECKPOINTS}/{name}", data)

    def read_checkpoint_file(self, name: str) -> bytes | None:
        return self.files.read_bytes(f"{CHECKPOINTS}/{name}")
