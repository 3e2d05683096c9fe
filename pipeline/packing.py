"""`stride data pack`: a data set into parquet shards plus a manifest (docs/formats.md).

A folder is read in one streaming pass on Ray Data (files read, decoded, resized and,
for png/jpeg, encoded again in Ray Data tasks, in a fixed order), any other source
Stride reads (the digits, torchvision sets, synthetic images) from memory. The split
is drawn as the in-memory path draws it (`split_seed`, the fractions, or the folder's
own `train/`, `val/`, `test/`), rows are shuffled across classes before writing, and
each shard is written whole with its sha256; `manifest.json` comes last. Packing into
a folder that holds the same data set packed the same way does nothing; into one that
holds anything else it is refused, so the output is never a mix of two packs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from pipeline.datafiles import DataError, DataRoot, fs_call, peek_channels, scan_folder
from pipeline.manifest import (
    ENCODINGS,
    FORMAT,
    MANIFEST,
    SPLITS,
    VERSION,
    Manifest,
    read_manifest,
    write_manifest,
)
from pipeline.packed import BAD, FATAL, OK, FolderDecoder, check_bad
from pipeline.schema import ConfigError, DataSpec

log = logging.getLogger(__name__)
ROW_GROUP_BYTES = 8 * 2**20  # a reader holds one row group at a time
RAW_LIMIT = 64 * 64 * 3  # auto encoding: raw pixels up to this many bytes per image


@dataclass
class PackResult:
    manifest: Manifest
    images: int
    seconds: float
    skipped: list[str]
    written: bool  # False: the same pack was already there


def choose_encoding(encoding: str, shape: tuple[int, int, int]) -> str:
    """`auto`: raw pixels for small images (CIFAR-sized and below), PNG above."""
    if encoding == "auto":
        return "raw" if shape[0] * shape[1] * shape[2] <= RAW_LIMIT else "png"
    if encoding not in ENCODINGS:
        raise ConfigError(f"--encoding {encoding!r}: allowed auto, {', '.join(ENCODINGS)}")
    return encoding


def pack(
    spec: DataSpec,
    out: DataRoot,
    *,
    shard_mb: float = 64.0,
    encoding: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> PackResult:
    """Pack the data set of `spec` into `out`; see the module docstring."""
    if shard_mb <= 0:
        raise ConfigError(f"--shard-mb {shard_mb}: must be > 0")
    started = time.perf_counter()
    source = FolderSource(spec) if spec.name == "folder" else MemorySource(spec)
    return write_pack(
        source,
        out,
        name=spec.name,
        shard_mb=shard_mb,
        encoding=encoding,
        max_bad_fraction=spec.max_bad_fraction,
        progress=progress,
        started=started,
    )


def write_pack(
    source: Any,
    out: DataRoot,
    *,
    name: str,
    shard_mb: float = 64.0,
    encoding: str = "auto",
    max_bad_fraction: float = 0.0,
    progress: Callable[[int], None] | None = None,
    started: float | None = None,
) -> PackResult:
    """Write what `source` yields (a FolderSource, MemorySource or anything with their
    attributes: shape, classes, sizes, stats, fingerprint, location, split_params(),
    batches(split, notes, progress)) as a packed data set at `out`."""
    started = time.perf_counter() if started is None else started
    enc = choose_encoding(encoding, source.shape)
    params = {
        "image": list(source.shape),
        "encoding": enc,
        "shard_mb": shard_mb,
        "split": source.split_params(),
    }
    existing = _existing(out)
    if existing is not None:
        same = (
            existing.data.get("source", {}).get("fingerprint") == source.fingerprint
            and existing.data.get("params") == params
        )
        if same:
            return PackResult(existing, 0, time.perf_counter() - started, [], False)
        raise DataError(
            f"--out {out} already holds a packed data set (from "
            f"{existing.data.get('source', {}).get('location')}, other files or settings); "
            "choose another --out or delete it first"
        )
    writer = ShardWriter(out, source.shape, enc, shard_mb, len(source.classes))
    splits: dict[str, Any] = {}
    skipped: list[str] = []
    sums = np.zeros((2, source.shape[0]), np.float64)
    pixels = 0
    for split in SPLITS:
        notes: list[str] = []
        for images, labels, ids, names in source.batches(split, notes, progress):
            writer.add(split, images, labels, ids, names)
            if split == "train":
                wide = images.astype(np.int64)
                sums[0] += wide.sum(axis=(0, 2, 3))
                sums[1] += (wide * wide).sum(axis=(0, 2, 3))
                pixels += images.shape[0] * images.shape[2] * images.shape[3]
        check_bad(notes, source.sizes[split], max_bad_fraction, split)
        skipped += notes
        splits[split] = writer.close(split)
    mean, std = source.stats or _stats(sums, pixels)
    manifest = write_manifest(
        out,
        {
            "format": FORMAT,
            "version": VERSION,
            "writer": _versions(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {
                "name": name,
                "location": source.location,
                "fingerprint": source.fingerprint,
            },
            "params": params,
            "image": {
                "channels": source.shape[0],
                "height": source.shape[1],
                "width": source.shape[2],
                "encoding": enc,
                "scale": 255.0,
            },
            "columns": {
                "id": "int64: unique in the data set",
                "image": "fixed_size_binary(C*H*W), (C, H, W) uint8"
                if enc == "raw"
                else f"binary: {enc} bytes",
                "label": "int64: index into class_names",
                "source": "string: the file (or source row) it came from",
            },
            "class_names": list(source.classes),
            "mean": list(mean),
            "std": list(std),
            "splits": splits,
            "skipped": skipped,
        },
    )
    total = int(sum(manifest.sizes.values()))
    return PackResult(manifest, total, time.perf_counter() - started, skipped, True)


def _existing(out: DataRoot) -> Manifest | None:
    """The manifest already at --out, None for an empty or missing folder; a folder that
    holds files but no manifest (an interrupted pack, something else) is refused."""
    import pyarrow.fs

    fs, base = out.filesystem()
    info = fs_call(out, "read --out", fs.get_file_info, base)
    if info.type == pyarrow.fs.FileType.NotFound:
        return None
    selector = pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True)
    listed = fs_call(out, "list --out", fs.get_file_info, selector)
    files = [i for i in listed if i.type == pyarrow.fs.FileType.File]
    if not files:
        return None
    if any(i.base_name == MANIFEST and i.path == f"{base}/{MANIFEST}" for i in files):
        return read_manifest(out)
    raise DataError(
        f"--out {out} holds {len(files)} file(s) but no {MANIFEST} (an interrupted pack, or "
        "other data); choose another --out or delete it first"
    )


def split_params(spec: DataSpec) -> dict[str, Any]:
    return {
        "seed": spec.split_seed,
        "val_fraction": spec.val_fraction,
        "test_fraction": spec.test_fraction,
    }


def _stats(sums: np.ndarray, pixels: int) -> tuple[list[float], list[float]]:
    n = max(pixels, 2)
    mean = sums[0] / 255.0 / n
    var = (sums[1] / 255.0**2 - n * mean**2) / (n - 1)
    std = np.sqrt(np.clip(var, 0.0, None)).clip(min=1e-6)
    return [float(v) for v in mean], [float(v) for v in std]


def _versions() -> dict[str, str]:
    out = {}
    for name in ("stride", "pyarrow", "ray", "pillow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


# ---------------------------------------------------------------- sources


class FolderSource:
    """A folder (local or URI) read and decoded by Ray Data tasks, in a fixed order."""

    def __init__(self, spec: DataSpec) -> None:
        from pipeline.data import split_plan

        if spec.root is None or spec.image_size is None:
            raise ConfigError(
                "stride data pack: a folder needs data.image_size (--set "
                "data.image_size=[H,W]) to resize every image to"
            )
        self.spec, self.root = spec, DataRoot.parse(spec.root)
        self.location = str(self.root)
        layout = scan_folder(self.root)
        self.classes = layout.classes
        first = next(p for p in layout.parts.values() if len(p)).paths[0]
        self.expect = None if spec.channels else peek_channels(self.root, first)
        channels = spec.channels or self.expect or 3
        if channels not in (1, 3):
            raise ConfigError(f"data.channels: {channels} is not allowed; allowed: 1, 3")
        self.shape = (channels, *spec.image_size)
        self.stats: tuple[list[float], list[float]] | None = None
        plan = split_plan({k: np.asarray(p.labels) for k, p in layout.parts.items()}, spec)
        _, base = self.root.filesystem()
        self.files: dict[str, list[str]] = {}
        self.bases: dict[str, str] = {}
        self.offsets: dict[str, int] = {}
        offset = 0
        rng = np.random.default_rng(spec.split_seed)
        for split, (part, idx) in plan.items():
            paths = layout.parts[part].paths
            order = rng.permutation(len(idx))  # mix the classes before shards are cut
            self.files[split] = [paths[i] for i in idx.numpy()[order].tolist()]
            self.bases[split] = base if part == "all" else f"{base}/{part}"
            self.offsets[split] = offset
            offset += len(idx)
        self.sizes = {s: len(self.files[s]) for s in SPLITS}
        digest = hashlib.sha256(json.dumps(layout.classes).encode())
        for part in sorted(layout.parts):
            for path, size in zip(layout.parts[part].paths, layout.parts[part].sizes, strict=True):
                digest.update(f"{path[len(base) :]}\0{size}\n".encode())
        self.fingerprint = digest.hexdigest()

    def split_params(self) -> dict[str, Any]:
        s = self.spec
        return {
            "seed": s.split_seed,
            "val_fraction": s.val_fraction,
            "test_fraction": s.test_fraction,
        }

    def batches(
        self, split: str, notes: list[str], progress: Callable[[int], None] | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
        import ray.data

        from pipeline.ray_data import quiet_progress, read_blocks

        quiet_progress()
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # the shards' content is fixed
        fs, _ = self.root.filesystem()
        files = self.files[split]
        if not files:
            return
        decoder = FolderDecoder(self.root, self.bases[split], self.classes, self.shape, self.expect)
        ds = ray.data.read_binary_files(
            files,
            filesystem=fs,
            include_paths=True,
            num_cpus=self.spec.task_cpus,
            override_num_blocks=read_blocks(len(files)),
        ).map_batches(_PathDecoder(decoder), batch_size=64, num_cpus=self.spec.task_cpus)
        next_id = self.offsets[split]
        for batch in ds.iter_batches(batch_size=256, batch_format="numpy", prefetch_batches=2):
            status = batch["status"]
            for i in np.flatnonzero(status == FATAL):
                raise DataError(f"data: {batch['note'][i]}")
            bad = status == BAD
            notes.extend(str(n) for n in batch["note"][bad])
            keep = status == OK
            n = len(status)
            ids = np.arange(next_id, next_id + n)[keep]
            next_id += n
            names = [str(p) for p in batch["source"][keep]]
            if progress is not None:
                progress(n)
            yield batch["image"][keep], batch["label"][keep], ids, names


class _PathDecoder:
    """FolderDecoder plus the file each row came from, relative to the data set."""

    def __init__(self, decoder: FolderDecoder) -> None:
        self.decoder = decoder

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = self.decoder(batch)
        base = self.decoder.prefix
        out["source"] = np.asarray([str(p).removeprefix(base) for p in batch["path"]], object)
        return out


class MemorySource:
    """Any registered data set, loaded and split in memory as training does."""

    def __init__(self, spec: DataSpec) -> None:
        from pipeline.data import load_splits

        self.spec = spec
        splits = load_splits(spec)
        self.split_arrays = {"train": splits.train, "val": splits.val, "test": splits.test}
        self.classes = splits.info.class_names
        self.location = spec.name if spec.root is None else str(DataRoot.parse(spec.root))
        # The training split's own statistics; for a set on another scale (the digits,
        # 0..16, stretched to 0..255 once here) those of the stretched pixels.
        self.stats: tuple[list[float], list[float]] | None = (list(splits.mean), list(splits.std))
        if splits.scale != 255.0:
            self.stats = None
            for name, split in self.split_arrays.items():
                scaled = (split.images.double() * (255.0 / splits.scale)).round()
                self.split_arrays[name] = type(split)(scaled.to(split.images.dtype), split.labels)
        self.shape = splits.info.input_shape
        self.sizes = {k: len(v) for k, v in self.split_arrays.items()}
        digest = hashlib.sha256(json.dumps(spec.name).encode())
        for name in SPLITS:
            split = self.split_arrays[name]
            digest.update(split.images.numpy().tobytes())
            digest.update(split.labels.numpy().tobytes())
        self.fingerprint = digest.hexdigest()

    def split_params(self) -> dict[str, Any]:
        s = self.spec
        return {
            "seed": s.split_seed,
            "val_fraction": s.val_fraction,
            "test_fraction": s.test_fraction,
        }

    def batches(
        self, split: str, notes: list[str], progress: Callable[[int], None] | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
        data = self.split_arrays[split]
        offset = sum(self.sizes[s] for s in SPLITS[: SPLITS.index(split)])
        order = np.random.default_rng(self.spec.split_seed).permutation(len(data))
        images, labels = data.images.numpy(), data.labels.numpy()
        for start in range(0, len(order), 1024):
            idx = order[start : start + 1024]
            if progress is not None:
                progress(len(idx))
            names = [f"{self.spec.name}:{split}:{i}" for i in idx.tolist()]
            yield images[idx], labels[idx], offset + idx, names


# ---------------------------------------------------------------- shards


class ShardWriter:
    """Rows into parquet shards of about `shard_mb`, each written whole with its sha256."""

    def __init__(
        self,
        out: DataRoot,
        shape: tuple[int, int, int],
        encoding: str,
        shard_mb: float,
        classes: int,
    ) -> None:
        self.out, self.shape, self.encoding, self.classes = out, shape, encoding, classes
        self.fs, self.base = out.filesystem()
        self.limit = int(shard_mb * 2**20)
        self.pending: list[Any] = []
        self.pending_bytes = 0
        self.shards: list[dict[str, Any]] = []

    def add(
        self, split: str, images: np.ndarray, labels: np.ndarray, ids: np.ndarray, names: list[str]
    ) -> None:
        import pyarrow as pa

        if not len(labels):
            return
        encoded = self._encode(images)
        table = pa.table(
            {
                "id": pa.array(np.asarray(ids, np.int64)),
                "image": encoded,
                "label": pa.array(np.asarray(labels, np.int64)),
                "source": pa.array(names, pa.string()),
            }
        )
        per_row = max(1, table.nbytes // table.num_rows)
        while table.num_rows:  # cut shards at the limit, whatever size the batches come in
            room = max(1, (self.limit - self.pending_bytes) // per_row)
            part, table = table.slice(0, room), table.slice(room)
            self.pending.append(part)
            self.pending_bytes += part.num_rows * per_row
            if self.pending_bytes >= self.limit:
                self._flush(split)

    def _encode(self, images: np.ndarray) -> Any:
        import pyarrow as pa

        c, h, w = self.shape
        n = len(images)
        if self.encoding == "raw":
            flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(n * c * h * w)
            return pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(c * h * w), n, [None, pa.py_buffer(flat)]
            )
        return pa.array([encode_image(img, self.encoding) for img in images], pa.binary())

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_bytes = [], 0
        per_row = max(1, table.nbytes // max(1, table.num_rows))
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=max(1, ROW_GROUP_BYTES // per_row))
        data = buffer.getvalue()
        rel = f"{split}/part-{sum(s['path'].startswith(split) for s in self.shards):05d}.parquet"
        path = f"{self.base}/{rel}"
        if self.out.is_local:
            fs_call(self.out, f"make {split}/", self.fs.create_dir, f"{self.base}/{split}")
        with fs_call(self.out, f"write {rel}", self.fs.open_output_stream, path) as f:
            f.write(data)
        labels = table.column("label").to_numpy()
        self.shards.append(
            {
                "path": rel,
                "rows": table.num_rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "classes": np.bincount(labels, minlength=self.classes).tolist(),
            }
        )

    def close(self, split: str) -> dict[str, Any]:
        """Write what is pending; the split's entry of the manifest."""
        self._flush(split)
        mine = [s for s in self.shards if s["path"].startswith(f"{split}/")]
        return {"rows": sum(s["rows"] for s in mine), "shards": mine}


def encode_image(image: np.ndarray, encoding: str) -> bytes:
    """(C, H, W) uint8 as PNG (lossless) or JPEG (quality 95) bytes."""
    from PIL import Image

    c = image.shape[0]
    pixels = image[0] if c == 1 else image.transpose(1, 2, 0)
    buffer = io.BytesIO()
    if encoding == "png":
        Image.fromarray(pixels).save(buffer, format="PNG")
    else:
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
