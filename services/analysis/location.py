"""Where a run store lives: a local folder, a `file://` URI, or an object store URI.

The reader needs five operations (list folders, read a file, read a file from an
offset, test for a file or a folder); `open_location` picks the implementation
from the root's scheme. Local paths and `file://` use the standard library. Object
store URIs (`s3://`, `gs://`, `abfs://`, `hdfs://`) go through pyarrow.fs, exactly as
training writes them (pipeline/runstore.py), query options such as
`?endpoint_override=` included. Other schemes (`memory://`, ...) go through fsspec
when it is installed; without either they are a clear error, not a silent fallback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse


class Location(Protocol):
    """The file operations the run-store reader uses, on paths relative to the root."""

    root: str

    def list_dirs(self, *parts: str) -> list[str]:
        """Names of the sub-folders of `parts` (empty when the folder does not exist)."""
        ...

    def read_bytes(self, *parts: str, offset: int = 0) -> bytes | None:
        """The file's bytes from `offset` on, or None when the file does not exist."""
        ...

    def is_file(self, *parts: str) -> bool:
        """Whether `parts` names an existing file."""
        ...

    def is_dir(self, *parts: str) -> bool:
        """Whether `parts` names an existing folder."""
        ...


class LocalLocation:
    """A run store on a local (or mounted shared) file system."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self._root = root

    def _path(self, parts: tuple[str, ...]) -> Path:
        return self._root.joinpath(*parts)

    def list_dirs(self, *parts: str) -> list[str]:
        try:
            with os.scandir(self._path(parts)) as entries:
                return sorted(e.name for e in entries if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_bytes(self, *parts: str, offset: int = 0) -> bytes | None:
        try:
            with open(self._path(parts), "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def is_file(self, *parts: str) -> bool:
        return self._path(parts).is_file()

    def is_dir(self, *parts: str) -> bool:
        return self._path(parts).is_dir()


class FsspecLocation:
    """A run store behind an fsspec file system (object stores, `memory://` in tests)."""

    def __init__(self, fs: Any, root: str, uri: str) -> None:
        self.root = uri
        self._fs = fs
        self._base = root.rstrip("/")

    def _path(self, parts: tuple[str, ...]) -> str:
        return "/".join([self._base, *parts])

    def list_dirs(self, *parts: str) -> list[str]:
        try:
            entries = self._fs.ls(self._path(parts), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = [str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n, e in zip(names, entries, strict=True) if e["type"] == "directory")

    def read_bytes(self, *parts: str, offset: int = 0) -> bytes | None:
        try:
            with self._fs.open(self._path(parts), "rb") as f:
                if offset:
                    f.seek(offset)
                data: bytes = f.read()
                return data
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def is_file(self, *parts: str) -> bool:
        return bool(self._fs.isfile(self._path(parts)))

    def is_dir(self, *parts: str) -> bool:
        return bool(self._fs.isdir(self._path(parts)))


class ArrowLocation:
    """A run store behind a pyarrow file system (S3, GCS, Azure, HDFS)."""

    def __init__(self, fs: Any, root: str, uri: str) -> None:
        self.root = redact(uri)
        self._fs = fs
        self._base = root.rstrip("/")

    def _path(self, parts: tuple[str, ...]) -> str:
        return "/".join([self._base, *parts])

    def _type(self, parts: tuple[str, ...]) -> Any:
        return self._fs.get_file_info(self._path(parts)).type

    def list_dirs(self, *parts: str) -> list[str]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self._path(parts), allow_not_found=True)
        try:
            infos = self._fs.get_file_info(selector)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory)

    def read_bytes(self, *parts: str, offset: int = 0) -> bytes | None:
        try:
            with self._fs.open_input_file(self._path(parts)) as f:
                if offset:
                    f.seek(offset)
                return bytes(f.read())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def is_file(self, *parts: str) -> bool:
        import pyarrow.fs

        return bool(self._type(parts) == pyarrow.fs.FileType.File)

    def is_dir(self, *parts: str) -> bool:
        import pyarrow.fs

        return bool(self._type(parts) == pyarrow.fs.FileType.Directory)


def redact(uri: str) -> str:
    """A URI without user info (credentials) or query, for messages."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    rest = rest.split("?", 1)[0]
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{slash}{path}"


def _open_arrow(text: str) -> ArrowLocation | None:
    """pyarrow.fs for the URI, or None when pyarrow is absent or does not know the scheme."""
    try:
        import pyarrow
        import pyarrow.fs
    except ImportError:
        return None
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(text)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
        return None
    except OSError as exc:  # e.g. the bucket's region cannot be resolved
        detail = str(exc).replace(text, redact(text))
        raise ValueError(f"run store {redact(text)!r}: {detail}") from None
    return ArrowLocation(fs, path, text)


def open_location(root: str | os.PathLike[str]) -> Location:
    """The run store at `root`: a path, `file://PATH`, or a URI pyarrow.fs or fsspec opens.

    Raises ValueError for a URI that neither pyarrow nor fsspec (with its plug-in,
    such as s3fs) can open.
    """
    text = os.fspath(root)
    parsed = urlparse(text)
    # One-letter schemes are Windows drive letters, not URIs.
    if not parsed.scheme or len(parsed.scheme) == 1:
        return LocalLocation(Path(text))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file URI {text!r} names host {parsed.netloc!r}; use file:///PATH")
        return LocalLocation(Path(unquote(parsed.path)))
    arrow = _open_arrow(text)
    if arrow is not None:
        return arrow
    try:
        import fsspec
    except ImportError:
        raise ValueError(
            f"run store {redact(text)!r}: the {parsed.scheme}:// scheme is not one pyarrow "
            "opens and needs fsspec (pip install fsspec and its plug-in); without them only "
            "local paths and file:// URIs are readable"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"run store {redact(text)!r}: {exc}") from None
    return FsspecLocation(fs, path, text)
