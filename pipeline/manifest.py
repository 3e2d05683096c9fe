"""The manifest of a packed data set (`stride data pack`): `manifest.json` beside the
parquet shards, the one file a reader trusts about them (docs/formats.md).

It names the format and its version, the writer, the source it was packed from (its
location without credentials, and a fingerprint of its files), the image shape and
encoding, the class names, the channel mean and std of the training split, and per
split its shards: path, rows, bytes, sha256 and class histogram. `checksum` is the
sha256 of the rest of the manifest (canonical JSON), so one value identifies the
whole data set: config.json records it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pipeline.datafiles import DataError, DataRoot, fs_call

MANIFEST = "manifest.json"
FORMAT = "stride-parquet"
VERSION = 1
ENCODINGS = ("raw", "png", "jpeg")
SPLITS = ("train", "val", "test")


def canonical_checksum(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Shard:
    path: str  # relative to the data set's folder: train/part-00000.parquet
    rows: int
    bytes: int
    sha256: str
    classes: tuple[int, ...]  # images per class index

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "classes": list(self.classes),
        }


@dataclass(frozen=True)
class Manifest:
    """A parsed, checked manifest.json (`data` keeps the document as read)."""

    data: dict[str, Any]

    @property
    def checksum(self) -> str:
        return str(self.data["checksum"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.data["class_names"])

    @property
    def shape(self) -> tuple[int, int, int]:
        image = self.data["image"]
        return int(image["channels"]), int(image["height"]), int(image["width"])

    @property
    def encoding(self) -> str:
        return str(self.data["image"]["encoding"])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.data["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.data["std"])

    def shards(self, split: str) -> list[Shard]:
        return [
            Shard(s["path"], int(s["rows"]), int(s["bytes"]), s["sha256"], tuple(s["classes"]))
            for s in self.data["splits"][split]["shards"]
        ]

    def rows(self, split: str) -> int:
        return int(self.data["splits"][split]["rows"])

    @property
    def sizes(self) -> dict[str, int]:
        return {s: self.rows(s) for s in SPLITS}


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Check a manifest's format, version, fields and checksum; DataError names `where`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{where}: not a JSON manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DataError(
            f"{where}: not a Stride data set manifest (format {found!r}, expected {FORMAT!r}); "
            "pack the data with stride data pack"
        )
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise DataError(
            f"{where}: manifest version {version!r} is newer than this reader's {VERSION}; "
            "upgrade Stride to read it"
        )
    try:
        image = data["image"]
        shape = (int(image["channels"]), int(image["height"]), int(image["width"]))
        if image["encoding"] not in ENCODINGS or shape[0] not in (1, 3) or min(shape) < 1:
            raise ValueError(f"image {image}")
        if len(data["class_names"]) < 2 or len(data["mean"]) != shape[0]:
            raise ValueError("class_names or mean")
        for split in SPLITS:
            shards = data["splits"][split]["shards"]
            if sum(int(s["rows"]) for s in shards) != int(data["splits"][split]["rows"]):
                raise ValueError(f"split {split}: shard rows do not add up")
            for s in shards:
                if not isinstance(s["sha256"], str) or ".." in s["path"].split("/"):
                    raise ValueError(f"shard {s.get('path')}")
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: malformed manifest ({exc})") from None
    if data.get("checksum") != canonical_checksum(data):
        raise DataError(
            f"{where}: the manifest's checksum does not match its content (edited or "
            "damaged); pack the data again"
        )
    return Manifest(data)


def read_manifest(root: DataRoot) -> Manifest:
    """The manifest of the packed data set at `root`; a DataError says what is wrong:
    no manifest (not packed), a foreign or damaged one, or a store that cannot be read."""
    fs, base = root.filesystem()
    path = f"{base}/{MANIFEST}"
    try:
        with fs_call(root, f"read {MANIFEST}", fs.open_input_stream, path) as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(
            f"{root}: no {MANIFEST}; a parquet data set is made by stride data pack SOURCE "
            f"--out {root}"
        ) from None
    return parse_manifest(bytes(raw), root.shown(path))


def write_manifest(root: DataRoot, data: dict[str, Any]) -> Manifest:
    """Add the checksum and write manifest.json (last, after every shard)."""
    data = {**data, "checksum": canonical_checksum(data)}
    fs, base = root.filesystem()
    text = json.dumps(data, indent=2).encode() + b"\n"
    if root.is_local:
        fs_call(root, "make the folder", fs.create_dir, base)
    with fs_call(root, f"write {MANIFEST}", fs.open_output_stream, f"{base}/{MANIFEST}") as f:
        f.write(text)
    return Manifest(data)
