"""Experiment and run names: what writers create, and what readers accept.

Writers create `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` (docs/formats.md). Readers are more
lenient (older stores had '=' in sweep ids): a name only has to stay inside its
folder, so any printable name without a path separator, up to a folder name's 255
bytes, is read.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from runstore.errors import BadName

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
READ_NAME_RE = re.compile(r"[A-Za-z0-9][^/\\\x00-\x1f]{0,254}")
NAME_MAX_BYTES = 255  # a folder name's limit on the usual file systems (NAME_MAX)


def check_name(kind: str, name: str) -> str:
    """A name a writer may create: letters, digits, . _ - (no path tricks)."""
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise BadName(
            f"{kind} {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def is_readable_name(name: str) -> bool:
    """Whether a reader may open a folder of this name (it stays inside its parent)."""
    return bool(READ_NAME_RE.fullmatch(name)) and len(name.encode("utf-8")) <= NAME_MAX_BYTES


def check_read_name(kind: str, name: str) -> str:
    """A name asked for by a reader (an RPC, a command); BadName says what is allowed."""
    if not READ_NAME_RE.fullmatch(name):
        raise BadName(
            f"{kind} {name!r} is not a valid name (a letter or digit, then up to 254 "
            "characters without '/', '\\' or control characters)"
        )
    if len(name.encode("utf-8")) > NAME_MAX_BYTES:
        raise BadName(
            f"{kind} {name!r} is {len(name.encode('utf-8'))} bytes in UTF-8; a folder name "
            f"has at most {NAME_MAX_BYTES} bytes"
        )
    return name


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(label: str) -> str:
    """`<label>-<YYYYmmdd-HHMMSS>-<4 hex>`, for a run without a name of its own."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return check_name("run id", f"{label}-{stamp}-{secrets.token_hex(2)}")
