"""Experiment and run names: what writers create, and what readers accept.

Writers create `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` (docs/formats.md). Readers are more
lenient (older stores had '=' in sweep ids): a name only has to stay inside its
folder, so any printable name without a path separator, up to a folder name's 255
bytes, is read.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

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


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
LABEL_MAX = 80  # characters of a run id taken by its values (a name holds 128)


def value_name(value: Any) -> str:
    """A config value as it appears in a run or group name, reading as the same value.

    Numbers keep their sign, exponent and decimal point: a float is Python's shortest
    repr (which reads back as the same float) with the exponent's `+` dropped, since a
    name cannot hold `+` and `1e+30` must not become `1e-30`: 1e+30 -> `1e30`, 1e-30 ->
    `1e-30`, -0.5 -> `-0.5`, 0.1 and 0.10 (the same float) -> `0.1`. Booleans and null
    are JSON (`true`, `null`). In text, each run of characters a name cannot hold
    becomes one `-`; a mapping's values are joined by `-`.
    """
    if isinstance(value, dict):
        return "-".join(value_name(v) for v in value.values()) or "x"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value).replace("e+", "e")
    text = _UNSAFE.sub("-", str(value)).strip("-")
    return text or "x"


def values_label(values: Iterable[Any], limit: int = LABEL_MAX) -> str:
    """Several values' names joined by `_`, as the start of a run id: whole values only
    (one that would pass `limit` is left out with all after it, never cut), and
    starting with a letter or digit (`v` is put before a value such as `-0.5`)."""
    parts: list[str] = []
    for value in values:
        part = value_name(value)
        if len("_".join([*parts, part])) > limit:
            break
        parts.append(part)
    label = "_".join(parts) or "run"
    return label if label[0].isalnum() else f"v{label}"
