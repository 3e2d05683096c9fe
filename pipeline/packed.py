"""Rows of images: what Ray Data tasks (and the in-memory parquet loader) make of a
packed shard or of loose image files. Ray-free: plain pyarrow, numpy and Pillow.

Every decoder emits the same columns, one row per image:

- `image`: uint8 (C, H, W);
- `label`: int64 class index;
- `status`: `OK`, `BAD` (this image is unreadable: skipped when `data.max_bad_fraction`
  allows, else the run fails naming it) or `FATAL` (a whole shard is wrong: a checksum
  that does not match, not parquet at all; the run always fails);
- `note`: empty, or what is wrong and where (a file, or a shard and row id).

Problems travel as rows rather than exceptions, so that the training worker that
meets them decides (skip and count, or fail with the file's name) and the count of
skipped images reaches the run's summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.datafiles import DataError, DataRoot, decode_image, read_bytes
from pipeline.manifest import Manifest

OK, BAD, FATAL = 0, 1, 2
COLUMNS = ("image", "label", "status", "note")


def rows(images: np.ndarray, labels: np.ndarray, status: np.ndarray, notes: list[str]) -> dict:
    return {
        "image": images,
        "label": labels.astype(np.int64, copy=False),
        "status": status.astype(np.int8, copy=False),
        "note": np.asarray(notes, dtype=object),
    }


def problem_row(shape: tuple[int, int, int], status: int, note: str) -> dict:
    """One row that carries a problem instead of an image."""
    return rows(np.zeros((1, *shape), np.uint8), np.array([-1]), np.array([status]), [note])


class FolderDecoder:
    """Image files (Ray Data's read_binary_files rows: path, bytes) to image rows; the
    class is the first folder below `base` (the split's folder)."""

    def __init__(
        self,
        root: DataRoot,
        base: str,
        classes: tuple[str, ...],
        shape: tuple[int, int, int],
        expect: int | None = None,
    ) -> None:
        self.root, self.prefix, self.shape, self.expect = (
            root,
            base.rstrip("/") + "/",
            shape,
            expect,
        )
        self.index = {name: i for i, name in enumerate(classes)}

    def label(self, path: str) -> int:
        rel = path[len(self.prefix) :] if path.startswith(self.prefix) else path
        return self.index.get(rel.split("/", 1)[0], -1)

    def __call__(self, batch: dict[str, Any]) -> dict:
        c, h, w = self.shape
        paths = list(batch["path"])
        images = np.zeros((len(paths), c, h, w), np.uint8)
        labels = np.empty(len(paths), np.int64)
        status = np.zeros(len(paths), np.int8)
        notes = [""] * len(paths)
        for i, (path, data) in enumerate(zip(paths, batch["bytes"], strict=True)):
            labels[i] = self.label(path)
            try:
                images[i] = decode_image(bytes(data), c, (h, w), expect=self.expect)
            except ValueError as exc:
                status[i] = BAD
                notes[i] = f"cannot read image {self.root.shown(path)}: {exc}"
            if labels[i] < 0 and not status[i]:
                status[i] = BAD
                notes[i] = f"{self.root.shown(path)} is in no class folder"
        return rows(images, labels, status, notes)


class ShardDecoder:
    """Whole parquet shards (read_binary_files rows) to image rows, one batch per row
    group; the shard's sha256 is checked against the manifest first."""

    def __init__(
        self,
        root: DataRoot,
        shape: tuple[int, int, int],
        encoding: str,
        classes: int,
        checksums: dict[str, str],
    ) -> None:
        self.root, self.shape, self.encoding, self.classes = root, shape, encoding, classes
        self.checksums = checksums  # file system path -> sha256

    @classmethod
    def of(cls, root: DataRoot, manifest: Manifest, checksums: dict[str, str]) -> ShardDecoder:
        return cls(root, manifest.shape, manifest.encoding, len(manifest.class_names), checksums)

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict]:
        for path, data in zip(batch["path"], batch["bytes"], strict=True):
            yield from self.shard(str(path), bytes(data))

    def shard(self, path: str, data: bytes) -> Iterator[dict]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        shown = self.root.shown(path)
        digest = hashlib.sha256(data).hexdigest()
        expected = self.checksums.get(path)
        if digest != expected:
            yield problem_row(
                self.shape,
                FATAL,
                f"shard {shown}: sha256 {digest[:16]}... does not match the manifest's "
                f"{str(expected)[:16]}... (the shard changed after it was packed); pack the "
                "data set again",
            )
            return
        try:
            pf = pq.ParquetFile(pa.BufferReader(data))
            groups = [
                pf.read_row_group(g, columns=["id", "image", "label"])
                for g in range(pf.num_row_groups)
            ]
        except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
            yield problem_row(
                self.shape, FATAL, f"shard {shown}: not a readable parquet shard ({exc})"
            )
            return
        for table in groups:
            yield self.table(table, shown)

    def table(self, table: Any, shown: str) -> dict:
        c, h, w = self.shape
        n = table.num_rows
        labels = table.column("label").to_numpy().astype(np.int64)
        ids = table.column("id").to_numpy()
        status = np.zeros(n, np.int8)
        notes = [""] * n
        column = table.column("image").combine_chunks()
        size = c * h * w
        if self.encoding == "raw" and column.type.byte_width == size and column.null_count == 0:
            # fixed_size_binary(C*H*W): the buffer is the images, back to back
            buffer = column.buffers()[1]
            offset = column.offset * size
            images = np.frombuffer(buffer, np.uint8, n * size, offset).reshape(n, c, h, w)
        else:
            images = np.zeros((n, c, h, w), np.uint8)
            for i, value in enumerate(column.to_pylist()):
                try:
                    images[i] = self.image(value, size)
                except ValueError as exc:
                    status[i] = BAD
                    notes[i] = f"shard {shown} row id {ids[i]}: {exc}"
        wrong = (labels < 0) | (labels >= self.classes)
        for j in np.flatnonzero(wrong & (status == OK)).tolist():
            status[j] = BAD
            notes[j] = f"shard {shown} row id {ids[j]}: label {labels[j]} is not a class index"
        return rows(images, labels, status, notes)

    def image(self, value: bytes | None, size: int) -> np.ndarray:
        c, h, w = self.shape
        if value is None:
            raise ValueError("no image")
        if self.encoding == "raw":
            if len(value) != size:
                raise ValueError(
                    f"image has {len(value)} bytes where the manifest's {c}x{h}x{w} needs "
                    f"{size} (mixed channels or sizes)"
                )
            return np.frombuffer(value, np.uint8).reshape(c, h, w)
        return decode_image(value, c, (h, w))


def parquet_manifest(spec: Any) -> Manifest:
    """The manifest of `data.root` for data.name parquet."""
    from pipeline.manifest import read_manifest
    from pipeline.schema import ConfigError

    if spec.root is None:
        raise ConfigError(
            "data.root: the parquet data set needs root: the folder stride data pack wrote"
        )
    return read_manifest(DataRoot.parse(spec.root))


def shard_paths(root: DataRoot, manifest: Manifest, split: str) -> dict[str, str]:
    """{file system path: sha256} of a split's shards, in the manifest's order."""
    _, base = root.filesystem()
    return {f"{base}/{s.path}": s.sha256 for s in manifest.shards(split)}


def read_packed_split(
    root: DataRoot, manifest: Manifest, split: str, max_bad_fraction: float = 0.0
) -> tuple[Any, Any, list[str]]:
    """A packed split in memory: (uint8 images, int64 labels, notes of skipped images),
    every shard's checksum checked; DataError names a bad shard, or the first unreadable
    image when there are more than `max_bad_fraction` of the split's rows."""
    import torch

    fs, _ = root.filesystem()
    checksums = shard_paths(root, manifest, split)
    decoder = ShardDecoder.of(root, manifest, checksums)
    images, labels, skipped = [], [], []
    for path in checksums:
        for batch in decoder.shard(path, read_bytes(root, fs, path)):
            status = batch["status"]
            for i in np.flatnonzero(status == FATAL):
                raise DataError(batch["note"][i])
            skipped.extend(batch["note"][status == BAD])
            keep = status == OK
            images.append(batch["image"][keep])
            labels.append(batch["label"][keep])
    check_bad(skipped, manifest.rows(split), max_bad_fraction, split)
    c, h, w = manifest.shape
    stacked = np.concatenate(images) if images else np.zeros((0, c, h, w), np.uint8)
    return (
        torch.from_numpy(np.ascontiguousarray(stacked)),
        torch.from_numpy(np.concatenate(labels) if labels else np.zeros(0, np.int64)),
        skipped,
    )


def allowed_bad(total: int, fraction: float) -> int:
    """How many unreadable images a split of `total` may skip."""
    return int(fraction * total + 1e-9)


def _where(split: str) -> str:
    return "the folder's images" if split == "all" else f"the {split} split"


def check_bad(notes: list[str], total: int, fraction: float, split: str) -> None:
    """DataError naming the first unreadable image when there are more than allowed."""
    allowed = allowed_bad(total, fraction)
    if len(notes) > allowed:
        raise DataError(
            f"data: {notes[0]} ({len(notes)} unreadable image(s) in {_where(split)} of "
            f"{total}; data.max_bad_fraction {fraction:g} allows {allowed})"
        )
