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
import subprocess
import sys
import tempfile
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


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; servers run as other users
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


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


def local_root(root: str | Path) -> Path:
    """The run store root as a local path: a path, or a file:// URI.

    Training writes with plain file operations (atomic rename, append), so the store
    must be a file system every Ray node mounts (a local disk, NFS, a Kubernetes PVC).
    """
    text = str(root)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"run store {text!r}: {scheme}:// URIs are not supported for training yet; use a "
            "path on a file system every Ray node mounts (NFS, a Kubernetes PVC) or file://PATH"
        )
    return Path(text)


class RunDir:
    """One run's folder in the run store."""

    def __init__(self, path: str | Path) -> None:
        self.path = local_root(path)

    @classmethod
    def create(cls, root: str | Path, experiment: str, run_id: str) -> RunDir:
        check_name("experiment", experiment)
        check_name("run id", run_id)
        run = cls(local_root(root) / experiment / run_id)
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def exists(self) -> bool:
        return (self.path / "config.json").is_file()

    def write_config(self, record: dict[str, Any]) -> None:
        write_json(self.path / "config.json", record)

    def read_config(self) -> dict[str, Any]:
        return _read_json(self.path / "config.json")

    def append_metrics(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(self.metrics_path, "a") as f:
            f.write(line)  # one write of one whole line
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every whole line of metrics.jsonl; a truncated last line is skipped."""
        if not self.metrics_path.exists():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def keep_metrics_through(self, epoch: int) -> None:
        """Drop lines after `epoch` (a resumed run redoes them), atomically."""
        kept = [r for r in self.read_metrics() if int(r.get("epoch", 0)) <= epoch]
        atomic_write_text(
            self.metrics_path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept)
        )

    def write_summary(self, record: dict[str, Any]) -> None:
        write_json(self.path / "summary.json", record)

    def read_summary(self) -> dict[str, Any] | None:
        path = self.path / "summary.json"
        return _read_json(path) if path.exists() else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
