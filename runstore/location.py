"""Where a run store lives: one value, made where a path or URI enters."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class StoreLocation:
    """A run store (or a folder in it): an absolute local folder, or a URI with its
    options (s3://BUCKET/PREFIX?endpoint_override=...).

    Made once, by `parse`, where a path enters (a command-line flag, an environment
    variable, an RPC's server option, a test); Ray workers, Ray tasks and subprocesses
    receive the absolute form and read it back with `from_absolute`, which refuses a
    relative path. Ray Train V2 starts each worker in its own working directory, so a
    relative path resolved there lands in Ray's session folder instead of where the
    user asked.
    """

    uri: str  # an absolute path ("/data/runs") or a URI ("s3://bucket/runs?region=eu-west-1")

    @classmethod
    def parse(cls, value: str | os.PathLike[str] | StoreLocation) -> StoreLocation:
        """A path (a relative one against this process's working directory), file:///PATH,
        or another URI, kept as it is."""
        if isinstance(value, StoreLocation):
            return value
        text = os.fspath(value)
        if not text.strip():
            raise ValueError(
                "run store location is empty: give a folder, file:///PATH or a URI such as "
                "s3://BUCKET/PREFIX"
            )
        parsed = urlparse(text)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ValueError(
                    f"file URI {text!r} names host {parsed.netloc!r}; use file:///PATH"
                )
            text = unquote(parsed.path)
        elif parsed.scheme and len(parsed.scheme) > 1 and "://" in text:
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
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0] if not self.is_local else "file"

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
        return self.uri if self.is_local else redact(self.uri)


def redact(uri: str) -> str:
    """A URI without user info (credentials) or query, for messages and records."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    rest = rest.split("?", 1)[0]
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{slash}{path}"
