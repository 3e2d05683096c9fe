"""The run directory training writes: config.json, metrics.jsonl, summary.json,
checkpoints/ (see docs/formats.md). Files are replaced atomically and metric lines
appended whole, so a reader of a running or crashed run never sees half a record.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(kind: str, name: str) -> str:
    """An experiment, run or model name: letters, digits, . _ - (no path tricks)."""
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{kind} {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(label: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return check_name("run id", f"{label}-{stamp}-{secrets.token_hex(2)}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; servers run as other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in ("stride", "torch", "torchvision", "ray", "numpy", "onnx", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def code_version() -> str:
    """The package version plus the git revision of the source tree, when there is one."""
    from stride import __version__

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        rev = ""
    return f"{__version__}+g{rev}" if rev else __version__


@dataclass(frozen=True)
class StoreLocation:
    """Where a run store (or one run in it) lives: an absolute local folder, or a URI with
    its options (s3://BUCKET/PREFIX?endpoint_override=...).

    Made once, by `parse`, where a path enters (a command-line flag, an environment
    variable, a test); Ray workers, Ray tasks and subprocesses receive the absolute form
    and read it back with `from_absolute`, which refuses a relative path. Ray Train V2
    starts each worker in its own working directory, so a relative path resolved there
    lands in Ray's session folder instead of where the user asked.
    """

    uri: str  # an absolute path ("/data/runs") or a URI ("s3://bucket/runs?region=eu-west-1")

    @classmethod
    def parse(cls, value: str | os.PathLike[str] | StoreLocation) -> StoreLocation:
        """A path (relative ones against this process's working directory), file://PATH,
        or an object store URI, which is kept as it is."""
        if isinstance(value, StoreLocation):
            return value
        text = os.fspath(value)
        if not text.strip():
            raise ValueError(
                "run store location is empty: give a folder, file://PATH or a URI such as "
                "s3://BUCKET/PREFIX"
            )
        text = text.removeprefix("file://")
        if "://" in text:
            return cls(text)
        return cls(os.path.abspath(os.path.expanduser(text)))

    @classmethod
    def from_absolute(cls, text: str) -> StoreLocation:
        """The location a driver sent (`uri`): an absolute path or a URI, never relative."""
        if "://" not in text and not os.path.isabs(text):
            raise ValueError(
                f"run store location {text!r} is relative; it must be resolved where it "
                "entered (StoreLocation.parse), not in a Ray worker or subprocess"
            )
        return cls(text)

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @property
    def path(self) -> Path:
        """The local folder (ValueError for an object store)."""
        if not self.is_local:
            raise ValueError(f"{self} is not a local folder")
        return Path(self.uri)

    def child(self, *parts: str) -> StoreLocation:
        """A folder below this one (a URI keeps its query options)."""
        if self.is_local:
            return StoreLocation(str(Path(self.uri).joinpath(*parts)))
        base, sep, query = self.uri.partition("?")
        return StoreLocation("/".join([base.rstrip("/"), *parts]) + sep + query)

    def __str__(self) -> str:
        """For messages and records: a path, or the URI without credentials or options."""
        return self.uri if self.is_local else _redact(self.uri)


def open_store(root: str | os.PathLike[str] | StoreLocation) -> Files:
    """The run store at `root` (see `StoreLocation.parse`): a local folder, or a URI
    pyarrow.fs understands (s3://, gs://, abfs://, hdfs://; options such as
    ?endpoint_override=HOST:PORT&scheme=http go in the query, as
    pyarrow.fs.FileSystem.from_uri documents)."""
    location = StoreLocation.parse(root)
    if location.is_local:
        return LocalFiles(location.path)
    text = location.uri
    import pyarrow.fs  # a dependency of Ray Train

    try:
        fs, base = pyarrow.fs.FileSystem.from_uri(text)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
        scheme, safe = text.split("://", 1)[0], _redact(text)
        detail = str(exc).replace(text, safe).replace(text.split("?", 1)[0], safe)
        if isinstance(exc, OSError):  # a known scheme that could not be reached
            raise ValueError(
                f"run store {safe!r} cannot be opened: {detail} (for S3 without network "
                "access to AWS, give ?region=...; for another endpoint ?endpoint_override=)"
            ) from None
        raise ValueError(
            f"run store {safe!r}: {scheme}:// is not a file system pyarrow can open "
            f"({detail}); use a path, file://PATH or a URI such as s3://BUCKET/PREFIX"
        ) from None
    return ArrowFiles(fs, base.rstrip("/"), text.split("://", 1)[0], text)


def _redact(uri: str) -> str:
    """A URI without user info (credentials) or query, for messages and records."""
    scheme, rest = uri.split("://", 1)
    rest = rest.split("?", 1)[0]
    head, sep, tail = rest.partition("/")
    return f"{scheme}://{head.rsplit('@', 1)[-1]}{sep}{tail}"


class Files:
    """A folder of the run store; `rel` paths are '/'-separated and relative to it."""

    display: str  # for messages: a local path or a URI without credentials

    def child(self, *parts: str) -> Files:
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's content, or None when it does not exist."""
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace the file whole: readers see the old or the new content."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def append_line(self, rel: str, line: str) -> None:
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    def list_dirs(self, rel: str) -> list[str]:
        """Names of the folders in `rel` (empty when it does not exist)."""
        raise NotImplementedError

    def local_path(self) -> Path | None:
        """This folder on the local disk, when it is there."""
        return None

    def download(self, rel: str, target: Path) -> Path:
        """The folder `rel` as a local folder: itself when local, else a copy in `target`."""
        raise NotImplementedError


class LocalFiles(Files):
    """A folder on a file system every Ray node mounts (local disk, NFS, a PVC)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.display = str(base)

    def child(self, *parts: str) -> LocalFiles:
        return LocalFiles(self.base.joinpath(*parts))

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return (self.base / rel).read_bytes()
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        atomic_write_bytes(self.base / rel, data)

    def exists(self, rel: str) -> bool:
        return (self.base / rel).exists()

    def append_line(self, rel: str, line: str) -> None:
        path = self.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            end = f.tell()
            if end and _last_byte(path, end) != b"\n":
                # A crash tore the last line (rare): drop it, never glue a record onto it.
                f.truncate(path.read_bytes().rfind(b"\n") + 1)
            f.write(line.encode())  # one write of one whole line
            f.flush()
            os.fsync(f.fileno())

    def delete(self, rel: str) -> None:
        (self.base / rel).unlink(missing_ok=True)

    def list_dirs(self, rel: str) -> list[str]:
        folder = self.base / rel
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def local_path(self) -> Path:
        return self.base

    def download(self, rel: str, target: Path) -> Path:
        return self.base / rel


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


class ArrowFiles(Files):
    """A folder on a pyarrow file system: an object store such as S3 or GCS.

    Objects cannot be appended to, so metrics.jsonl is rewritten whole each epoch (one
    writer, rank 0; the file holds a line per epoch). A put replaces an object whole,
    which is what the atomic rename gives on a disk.
    """

    def __init__(self, fs: Any, base: str, scheme: str, uri: str) -> None:
        self.fs, self.base, self.scheme, self.uri = fs, base, scheme, uri
        self.display = f"{scheme}://{base}"

    def child(self, *parts: str) -> ArrowFiles:
        base = "/".join([self.base, *parts])
        return ArrowFiles(self.fs, base, self.scheme, self.uri)

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self._path(rel)) as f:
                return bytes(f.read())
        except FileNotFoundError:
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.fs.open_output_stream(self._path(rel)) as f:
            f.write(data)

    def exists(self, rel: str) -> bool:
        import pyarrow.fs

        return bool(self.fs.get_file_info(self._path(rel)).type != pyarrow.fs.FileType.NotFound)

    def append_line(self, rel: str, line: str) -> None:
        old = self.read_bytes(rel) or b""
        if old and not old.endswith(b"\n"):
            old = old[: old.rfind(b"\n") + 1]  # drop a torn last line
        self.write_bytes(rel, old + line.encode())

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self._path(rel))

    def list_dirs(self, rel: str) -> list[str]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self._path(rel), allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory)

    def download(self, rel: str, target: Path) -> Path:
        import pyarrow.fs

        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        pyarrow.fs.copy_files(
            self._path(rel),
            str(target),
            source_filesystem=self.fs,
            destination_filesystem=pyarrow.fs.LocalFileSystem(),
        )
        return target


class RunDir:
    """One run's folder in the run store (a local folder or a prefix of an object store)."""

    def __init__(self, location: str | os.PathLike[str] | StoreLocation | Files) -> None:
        self.files = location if isinstance(location, Files) else open_store(location)
        parts = self.files.display.rstrip("/").split("/")
        self.name = parts[-1]
        self.experiment = parts[-2] if len(parts) > 1 else ""

    @classmethod
    def create(
        cls, root: str | os.PathLike[str] | StoreLocation, experiment: str, run_id: str
    ) -> RunDir:
        check_name("experiment", experiment)
        check_name("run id", run_id)
        run = cls(open_store(root).child(experiment, run_id))
        local = run.local_path
        if local is not None:
            (local / "checkpoints").mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def at(
        cls, root: str | os.PathLike[str] | StoreLocation, experiment: str, run_id: str
    ) -> RunDir:
        """An existing (or future) run, without creating anything."""
        check_name("experiment", experiment)
        return cls(open_store(root).child(experiment, check_name("run id", run_id)))

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
        return self.files.exists("config.json")

    def write_config(self, record: dict[str, Any]) -> None:
        self._write_json("config.json", record)

    def read_config(self) -> dict[str, Any]:
        return self._read_json("config.json")

    def append_metrics(self, record: dict[str, Any]) -> None:
        self.files.append_line(METRICS, json.dumps(record, separators=(",", ":")) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every whole line of metrics.jsonl; a truncated last line is skipped."""
        data = self.files.read_bytes(METRICS)
        records = []
        for line in (data or b"").decode(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def keep_metrics_through(self, epoch: int) -> None:
        """Drop lines after `epoch` (a resumed run redoes them), atomically."""
        kept = [r for r in self.read_metrics() if int(r.get("epoch", 0)) <= epoch]
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept)
        self.files.write_bytes(METRICS, text.encode())

    def write_summary(self, record: dict[str, Any]) -> None:
        self._write_json("summary.json", record)

    def read_summary(self) -> dict[str, Any] | None:
        if self.files.read_bytes("summary.json") is None:
            return None
        return self._read_json("summary.json")

    def delete_summary(self) -> None:
        self.files.delete("summary.json")

    def write_checkpoint_file(self, name: str, data: bytes) -> None:
        """checkpoints/<name>, replaced whole."""
        self.files.write_bytes(f"{CHECKPOINTS}/{name}", data)

    def read_checkpoint_file(self, name: str) -> bytes | None:
        return self.files.read_bytes(f"{CHECKPOINTS}/{name}")

    def _write_json(self, rel: str, data: Any) -> None:
        self.files.write_bytes(rel, (json.dumps(data, indent=2) + "\n").encode())

    def _read_json(self, rel: str) -> dict[str, Any]:
        where = f"{self}/{rel}"
        raw = self.files.read_bytes(rel)
        if raw is None:
            raise FileNotFoundError(f"{where} does not exist")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        return data


METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
