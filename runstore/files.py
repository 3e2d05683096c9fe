"""The file operations of the run store, on a local disk or an object store.

`open_files(location)` picks the backend: a local folder (atomic rename and fsync),
a pyarrow file system (s3://, gs://, abfs://, hdfs://, options in the query), or
fsspec for other schemes (memory:// in tests). Paths below a `Files` are
'/'-separated names relative to it; callers check names (`runstore.names`) before
they get here.

Readers only read regular files that resolve inside the store: a symlink pointing out
of it, a FIFO or a device named like a run file is refused, so a store on a shared
disk cannot make a server read elsewhere or block on a pipe.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from runstore.location import StoreLocation, redact


class Files:
    """A folder of the run store."""

    display: str  # for messages: a local path or a URI without credentials

    def child(self, *parts: str) -> Files:
        raise NotImplementedError

    def read_bytes(self, rel: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """The file's bytes from `offset` on, at most `length` of them (all when None;
        '' past its end), or None when it does not exist."""
        raise NotImplementedError

    def size(self, rel: str) -> tuple[int, int] | None:
        """(size in bytes, modification time in ns), or None when it does not exist."""
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace the file whole: readers see the old or the new content."""
        raise NotImplementedError

    def append_line(self, rel: str, line: str) -> None:
        """Add one whole line, dropping a torn last line a crash may have left."""
        raise NotImplementedError

    def is_file(self, rel: str) -> bool:
        raise NotImplementedError

    def is_dir(self, rel: str = "") -> bool:
        raise NotImplementedError

    def list_dirs(self, rel: str = "") -> list[str]:
        """Names of the folders in `rel` (empty when it does not exist)."""
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    def local_path(self) -> Path | None:
        """This folder on the local disk, when it is there."""
        return None

    def download(self, rel: str, target: Path) -> Path:
        """The folder `rel` as a local folder: itself when local, else a copy in `target`."""
        raise NotImplementedError


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


class LocalFiles(Files):
    """A folder on a file system every node mounts (local disk, NFS, a PVC)."""

    def __init__(self, base: Path, root: Path | None = None) -> None:
        self.base = base
        self.root = root if root is not None else base  # the store's root: reads stay inside
        self.display = str(base)

    def child(self, *parts: str) -> LocalFiles:
        return LocalFiles(self.base.joinpath(*parts), self.root)

    def _inside(self, path: Path) -> bool:
        real = os.path.realpath(path)
        root = os.path.realpath(self.root)
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    def read_bytes(self, rel: str, offset: int = 0, length: int | None = None) -> bytes | None:
        path = self.base / rel
        shown = os.path.relpath(path, self.root)  # messages never show the store's own path
        if not self._inside(path):
            raise PermissionError(f"{shown} resolves outside the run store; not read")
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: no link.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermissionError(f"{shown} is not a regular file; not read")
            if offset:
                f.seek(offset)
            return f.read() if length is None else f.read(length)

    def size(self, rel: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.base / rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size, st.st_mtime_ns

    def write_bytes(self, rel: str, data: bytes) -> None:
        atomic_write_bytes(self.base / rel, data)

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

    def is_file(self, rel: str) -> bool:
        path = self.base / rel
        return path.is_file() and not path.is_symlink() and self._inside(path)

    def is_dir(self, rel: str = "") -> bool:
        path = self.base / rel if rel else self.base
        return path.is_dir() and self._inside(path)

    def list_dirs(self, rel: str = "") -> list[str]:
        folder = self.base / rel if rel else self.base
        try:
            with os.scandir(folder) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, rel: str) -> None:
        (self.base / rel).unlink(missing_ok=True)

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

    def __init__(self, fs: Any, base: str, location: StoreLocation) -> None:
        self.fs, self.base, self.location = fs, base.rstrip("/"), location
        self.display = f"{location.scheme}://{self.base}"

    def child(self, *parts: str) -> ArrowFiles:
        return ArrowFiles(self.fs, "/".join([self.base, *parts]), self.location)

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def _type(self, rel: str) -> Any:
        return self.fs.get_file_info(self._path(rel)).type

    def read_bytes(self, rel: str, offset: int = 0, length: int | None = None) -> bytes | None:
        try:
            with self.fs.open_input_file(self._path(rel)) as f:
                if offset:
                    if offset >= f.size():  # object stores refuse to seek past the end
                        return b""
                    f.seek(offset)
                return bytes(f.read() if length is None else f.read(length))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def size(self, rel: str) -> tuple[int, int] | None:
        import pyarrow.fs

        info = self.fs.get_file_info(self._path(rel))
        if info.type != pyarrow.fs.FileType.File:
            return None
        return int(info.size or 0), int(info.mtime_ns or 0)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.fs.open_output_stream(self._path(rel)) as f:
            f.write(data)

    def append_line(self, rel: str, line: str) -> None:
        old = self.read_bytes(rel) or b""
        if old and not old.endswith(b"\n"):
            old = old[: old.rfind(b"\n") + 1]  # drop a torn last line
        self.write_bytes(rel, old + line.encode())

    def is_file(self, rel: str) -> bool:
        import pyarrow.fs

        return bool(self._type(rel) == pyarrow.fs.FileType.File)

    def is_dir(self, rel: str = "") -> bool:
        import pyarrow.fs

        return bool(self._type(rel) == pyarrow.fs.FileType.Directory)

    def list_dirs(self, rel: str = "") -> list[str]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self._path(rel), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self._path(rel))

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


class FsspecFiles(Files):
    """A folder behind an fsspec file system (schemes pyarrow does not know; memory://)."""

    def __init__(self, fs: Any, base: str, location: StoreLocation) -> None:
        self.fs, self.base, self.location = fs, base.rstrip("/"), location
        self.display = f"{location.scheme}://{self.base.lstrip('/')}"

    def child(self, *parts: str) -> FsspecFiles:
        return FsspecFiles(self.fs, "/".join([self.base, *parts]), self.location)

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def read_bytes(self, rel: str, offset: int = 0, length: int | None = None) -> bytes | None:
        try:
            with self.fs.open(self._path(rel), "rb") as f:
                if offset:
                    f.seek(offset)
                return bytes(f.read() if length is None else f.read(length))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def size(self, rel: str) -> tuple[int, int] | None:
        try:
            info = self.fs.info(self._path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if info.get("type") != "file":
            return None
        return int(info.get("size") or 0), 0

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.fs.open(self._path(rel), "wb") as f:
            f.write(data)

    def append_line(self, rel: str, line: str) -> None:
        old = self.read_bytes(rel) or b""
        if old and not old.endswith(b"\n"):
            old = old[: old.rfind(b"\n") + 1]
        self.write_bytes(rel, old + line.encode())

    def is_file(self, rel: str) -> bool:
        return bool(self.fs.isfile(self._path(rel)))

    def is_dir(self, rel: str = "") -> bool:
        return bool(self.fs.isdir(self._path(rel)))

    def list_dirs(self, rel: str = "") -> list[str]:
        try:
            entries = self.fs.ls(self._path(rel), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = [str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n, e in zip(names, entries, strict=True) if e["type"] == "directory")

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(rel))

    def download(self, rel: str, target: Path) -> Path:
        if target.exists():
            shutil.rmtree(target)
        self.fs.get(self._path(rel) + "/", str(target), recursive=True)
        return target


def open_files(root: str | os.PathLike[str] | StoreLocation) -> Files:
    """The run store at `root` (see `StoreLocation.parse`): a local folder, a URI
    pyarrow.fs opens (s3://, gs://, abfs://, hdfs://; options such as
    ?endpoint_override=HOST:PORT&scheme=http in the query), or one fsspec opens."""
    location = StoreLocation.parse(root)
    if location.is_local:
        return LocalFiles(location.path)
    arrow = _open_arrow(location)
    if arrow is not None:
        return arrow
    safe = redact(location.uri)
    try:
        import fsspec
    except ImportError:
        raise ValueError(
            f"run store {safe!r}: {location.scheme}:// is not a file system pyarrow can open, "
            "and fsspec (with its plug-in) is not installed; use a path, file:///PATH or a "
            "URI such as s3://BUCKET/PREFIX"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(location.uri)
    except (ImportError, ValueError, OSError) as exc:
        raise ValueError(
            f"run store {safe!r}: {location.scheme}:// is not a file system pyarrow can open, "
            f"and fsspec could not open it either ({_clean(str(exc), location.uri)}); use a "
            "path, file:///PATH or a URI such as s3://BUCKET/PREFIX"
        ) from None
    return FsspecFiles(fs, path, location)


def _open_arrow(location: StoreLocation) -> ArrowFiles | None:
    """pyarrow.fs for the URI, or None when pyarrow is absent or does not know the scheme."""
    try:
        import pyarrow
        import pyarrow.fs
    except ImportError:
        return None
    text = location.uri
    try:
        fs, base = pyarrow.fs.FileSystem.from_uri(text)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
        return None
    except OSError as exc:  # a known scheme that could not be reached
        raise ValueError(
            f"run store {redact(text)!r} cannot be opened: {_clean(str(exc), text)} (for S3 "
            "without network access to AWS, give ?region=...; for another endpoint "
            "?endpoint_override=)"
        ) from None
    return ArrowFiles(fs, base, location)


def _clean(detail: str, uri: str) -> str:
    """An error text with the URI's credentials and options taken out."""
    return detail.replace(uri, redact(uri)).replace(uri.split("?", 1)[0], redact(uri))
