"""Streamed training data: what a run streams, and how a training worker iterates it.

A folder or parquet data set streams through Ray Data (`data.streaming`; `auto`
streams a URI, or a local set whose decoded images exceed `data.memory_budget_mb`).
The driver plans the stream (`open_stream`: the manifest, or the folder's listing and
its split), Ray Data reads and decodes in tasks on any node with CPUs
(`pipeline.ray_data`), and each worker iterates its share here:

- `StreamLoader` (training): exactly `steps` batches per epoch on every rank, computed
  from the split's size, whatever its shard holds: batches are cut to the batch size
  from what Ray Data yields (a local shuffle buffer can yield short batches mid-stream),
  a rank whose shard runs short repeats its first batch (as DistributedSampler pads),
  and one whose shard holds more drains the rest. DDP's collectives then never wait on
  a rank that has stopped.
- `StreamEval` (validation, test): every image of the rank's share exactly once (the
  shares do not overlap and drop nothing), summed and all-reduced by the loop.

Both move uint8 images to the device first and convert there; augmentation and
normalisation run per batch in the loop. Unreadable images arrive as rows marked bad
(`pipeline.packed`): skipped and counted while `data.max_bad_fraction` allows, else the
run fails naming the file.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.datafiles import DataError, DataRoot, read_bytes, scan_folder
from pipeline.manifest import Manifest, read_manifest
from pipeline.packed import BAD, FATAL, OK, FolderDecoder, ShardDecoder, allowed_bad
from pipeline.schema import ConfigError, DataSpec, RunConfig

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
STREAMED = ("folder", "parquet")


# ---------------------------------------------------------------- what streams


@functools.lru_cache(maxsize=8)
def wants_streaming(spec: DataSpec) -> bool:
    """Whether a data config streams: `data.streaming`, or for `auto` a URI or a set whose
    decoded images (uint8) exceed `data.memory_budget_mb`."""
    if spec.name not in STREAMED or spec.streaming is False:
        return False
    if spec.streaming is True or (spec.root is not None and "://" in spec.root):
        return True
    return decoded_bytes(spec) > spec.memory_budget_mb * 2**20


def decoded_bytes(spec: DataSpec) -> int:
    """The bytes the data set's images take decoded (all splits): what memory needs."""
    if spec.root is None:
        raise ConfigError(f"data.root: the {spec.name} data set needs root")
    root = DataRoot.parse(spec.root)
    if spec.name == "parquet":
        manifest = read_manifest(root)
        c, h, w = manifest.shape
        return sum(manifest.sizes.values()) * c * h * w
    h, w = spec.image_size or (0, 0)
    return scan_folder(root).images * (spec.channels or 3) * h * w


def data_reserve(cfg: RunConfig) -> float:
    """CPUs a run leaves free for its Ray Data tasks (0 when it does not stream)."""
    return cfg.data.task_cpus if wants_streaming(cfg.data) else 0.0


@dataclass(frozen=True)
class StreamMeta:
    """What every training worker knows of a streamed data set (plain data: it travels
    in Ray's train_loop_config)."""

    source: str  # folder | parquet
    location: str  # data.root: absolute path or URI (credentials never allowed there)
    shape: tuple[int, int, int]  # (C, H, W)
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: dict[str, int]  # images per split
    manifest_checksum: str | None = None
    probe: list[str] = field(default_factory=list)  # validation files the probe batch is read from
    probe_base: str = ""  # folder: the validation images' split folder
    probe_checksums: dict[str, str] = field(default_factory=dict)  # parquet: shard sha256
    encoding: str = "file"  # file (loose images) | raw | png | jpeg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamMeta:
        data = dict(data)
        for key in ("shape", "class_names", "mean", "std"):
            data[key] = tuple(data[key])
        return cls(**data)

    @property
    def root(self) -> DataRoot:
        return DataRoot.parse(self.location)

    def record(self) -> dict[str, Any]:
        """config.json's `data.source`: where the data came from, never credentials."""
        return {
            "name": self.source,
            "location": str(self.root),
            "streaming": True,
            "manifest_checksum": self.manifest_checksum,
            "encoding": self.encoding,
        }


@dataclass
class StreamPlan:
    """The driver's picture of a stream: the meta for the workers, and per split the
    files Ray Data reads (image files, or shards with their checksums)."""

    meta: StreamMeta
    files: dict[str, list[str]]
    bases: dict[str, str] = field(default_factory=dict)  # folder: each split's folder
    checksums: dict[str, str] = field(default_factory=dict)  # parquet: path -> sha256
    manifest: Manifest | None = None


def open_stream(cfg: RunConfig) -> StreamPlan:
    """Plan the stream of a config's data set, on the driver: read the manifest, or list
    the folder and draw its split (the same as in memory). Any problem is a DataError
    (or ConfigError) before a worker starts."""
    spec = cfg.data
    if spec.root is None:
        raise ConfigError(f"data.root: the {spec.name} data set needs root")
    root = DataRoot.parse(spec.root)
    if spec.name == "parquet":
        return _parquet_plan(root, spec)
    return _folder_plan(root, spec)


def _parquet_plan(root: DataRoot, spec: DataSpec) -> StreamPlan:
    from pipeline.packed import shard_paths

    manifest = read_manifest(root)
    files, checksums = {}, {}
    for split in SPLITS:
        paths = shard_paths(root, manifest, split)
        files[split] = list(paths)
        checksums.update(paths)
    probe, rows = [], 0
    for path in files["val"]:
        if rows >= PROBE_IMAGES:
            break
        probe.append(path)
        rows += next(s.rows for s in manifest.shards("val") if path.endswith("/" + s.path))
    c = manifest.shape[0]
    mean, std = (manifest.mean, manifest.std) if spec.normalize else ((0.0,) * c, (1.0,) * c)
    meta = StreamMeta(
        source="parquet",
        location=root.location.uri,
        shape=manifest.shape,
        class_names=manifest.class_names,
        mean=mean,
        std=std,
        sizes=manifest.sizes,
        manifest_checksum=manifest.checksum,
        probe=probe,
        probe_checksums={p: checksums[p] for p in probe},
        encoding=manifest.encoding,
    )
    return StreamPlan(meta, files, checksums=checksums, manifest=manifest)


def _folder_plan(root: DataRoot, spec: DataSpec) -> StreamPlan:
    from pipeline.data import split_plan

    if spec.image_size is None:
        raise ConfigError("data.image_size: the folder data set needs [height, width]")
    shape = (spec.channels or 3, *spec.image_size)
    if shape[0] not in (1, 3):
        raise ConfigError(f"data.channels: {shape[0]} is not allowed; allowed: 1, 3")
    layout = scan_folder(root)
    plan = split_plan({k: np.asarray(p.labels) for k, p in layout.parts.items()}, spec)
    _, base = root.filesystem()
    files, bases = {}, {}
    for split, (part, idx) in plan.items():
        paths = layout.parts[part].paths
        files[split] = [paths[i] for i in idx.tolist()]
        bases[split] = base if part == "all" else f"{base}/{part}"
    meta = StreamMeta(
        source="folder",
        location=root.location.uri,
        shape=shape,
        class_names=layout.classes,
        mean=(0.0,) * shape[0],
        std=(1.0,) * shape[0],
        sizes={s: len(files[s]) for s in SPLITS},
        probe=files["val"][:PROBE_IMAGES],
        probe_base=bases["val"],
    )
    stream = StreamPlan(meta, files, bases=bases)
    if spec.normalize:
        from pipeline.ray_data import folder_stats

        mean, std = folder_stats(stream, spec)
        stream.meta = StreamMeta(**{**asdict(meta), "mean": mean, "std": std})
    return stream


PROBE_IMAGES = 256  # the fixed validation batch the dead units are counted on (train.py)


def probe_images(meta: StreamMeta, n: int) -> torch.Tensor:
    """The first `n` validation images, uint8 (N, C, H, W), read the same on every worker."""
    root = meta.root
    fs, _ = root.filesystem()
    if meta.source == "folder":
        decoder = FolderDecoder(root, meta.probe_base, meta.class_names, meta.shape)
        paths = meta.probe[:n]
        batch = decoder({"path": paths, "bytes": [read_bytes(root, fs, p) for p in paths]})
        images = [batch["image"][batch["status"] == OK]]
    else:
        shard_decoder = ShardDecoder(
            root, meta.shape, meta.encoding, len(meta.class_names), meta.probe_checksums
        )
        images = []
        for path in meta.probe:
            for batch in shard_decoder.shard(path, read_bytes(root, fs, path)):
                _raise_fatal(batch)
                images.append(batch["image"][batch["status"] == OK])
    stacked = np.concatenate(images)[:n] if images else np.zeros((0, *meta.shape), np.uint8)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def _raise_fatal(batch: dict[str, Any]) -> None:
    for i in np.flatnonzero(batch["status"] == FATAL):
        raise DataError(f"data: {batch['note'][i]}")


# ---------------------------------------------------------------- iterating a share


@dataclass
class Stream:
    """A streamed data set as one worker sees it: the meta, and per split something
    with `iter_torch_batches` (its Ray Train shard, or a whole Dataset in one process)."""

    meta: StreamMeta
    sources: dict[str, Any]


class _Share:
    """Batches of one split's share with the bad rows taken out and counted."""

    def __init__(
        self,
        source: Any,
        split: str,
        total: int,
        max_bad_fraction: float,
        prefetch: int,
    ) -> None:
        self.source, self.split, self.total = source, split, total
        self.allowed = allowed_bad(total, max_bad_fraction)
        self.fraction = max_bad_fraction
        self.prefetch = prefetch
        self.skipped: list[str] | None = None  # the first pass's, once it ended
        self._seen: list[str] = []

    def good(self, batch_size: int, **kwargs: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from pipeline.ray_data import ImageCollate

        self._seen = []
        for x, y, status, notes in self.source.iter_torch_batches(
            batch_size=batch_size,
            prefetch_batches=self.prefetch,
            collate_fn=ImageCollate(),
            drop_last=False,
            device="cpu",  # the loop moves the uint8 images, a quarter of the floats' bytes
            **kwargs,
        ):
            if (status != OK).any():
                x, y = self._drop_bad(x, y, status, notes)
            if len(y):
                yield x, y
        if self.skipped is None:
            self.skipped = list(self._seen)

    def _drop_bad(
        self, x: torch.Tensor, y: torch.Tensor, status: np.ndarray, notes: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for i in np.flatnonzero(status == FATAL):
            raise DataError(f"data: {notes[i]}")
        for i in np.flatnonzero(status == BAD):
            self._seen.append(str(notes[i]))
            if self.skipped is None:
                log.warning("data: skipped: %s", notes[i])
        if len(self._seen) > self.allowed:
            raise DataError(
                f"data: {self._seen[0]} ({len(self._seen)} unreadable image(s) in this "
                f"worker's share of the {self.split} split of {self.total}; "
                f"data.max_bad_fraction {self.fraction:g} allows {self.allowed})"
            )
        keep = torch.from_numpy(status == OK)
        return x[keep], y[keep]


class StreamLoader:
    """The training split of one worker: exactly `len(self)` batches per epoch (module
    docstring), float images in [0, 1] on the device, augmented when asked."""

    def __init__(
        self,
        stream: Stream,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        device: torch.device,
        augment: Callable[[torch.Tensor], torch.Tensor] | None,
        seed: int,
        spec: DataSpec,
    ) -> None:
        meta = stream.meta
        total = meta.sizes["train"]
        self.share = _Share(
            stream.sources["train"], "train", total, spec.max_bad_fraction, spec.prefetch_batches
        )
        self.batch_size, self.device, self.augment = batch_size, device, augment
        self.seed, self.rank, self.epoch = seed, rank, 0
        self.rows = total // world_size  # what an equal split gives each rank
        self.steps = max(1, math.ceil(self.rows / batch_size))
        c, h, w = meta.shape
        buffer = int(spec.shuffle_buffer_mb * 2**20 // (c * h * w))
        self.buffer = max(buffer, batch_size) if spec.shuffle_buffer_mb > 0 else None
        self.padded = 0  # rows repeated in the last epoch (a short share)
        self.drained = 0  # rows left over in the last epoch (a long share)
        # Seconds the loop waited for Ray Data, and the loop's seconds, over all epochs:
        # their ratio is the share of training time the device waited for data.
        self.wait_seconds = 0.0
        self.loop_seconds = 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> StreamLoader:  # so that the loop's set_epoch call finds it
        return self

    def __len__(self) -> int:
        return self.steps

    def _cut(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of exactly batch_size rows (the last may be short)."""
        seed = (self.seed * 1_000_003 + self.epoch * 1_009 + self.rank) % 2**32
        held_x: list[torch.Tensor] = []
        held_y: list[torch.Tensor] = []
        n = 0
        for x, y in self.share.good(
            self.batch_size, local_shuffle_buffer_size=self.buffer, local_shuffle_seed=seed
        ):
            if not held_y and len(y) == self.batch_size:
                yield x, y  # the usual case: no copy
                continue
            held_x.append(x)
            held_y.append(y)
            n += len(y)
            while n >= self.batch_size:
                cx, cy = torch.cat(held_x), torch.cat(held_y)
                yield cx[: self.batch_size], cy[: self.batch_size]
                held_x, held_y = [cx[self.batch_size :]], [cy[self.batch_size :]]
                n -= self.batch_size
        if n:
            yield torch.cat(held_x), torch.cat(held_y)

    def _timed(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`_cut`'s batches, adding the time spent waiting for each to `wait_seconds`."""
        batches = self._cut()
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.wait_seconds += time.perf_counter() - t0
            yield batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.padded = self.drained = 0
        started = time.perf_counter()
        try:
            yield from self._epoch()
        finally:
            self.loop_seconds += time.perf_counter() - started

    def _epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        done, first = 0, None
        for x, y in self._timed():
            if done == self.steps:
                self.drained += len(y)  # consume the rest: the split's epoch must end
                continue
            if first is None:
                first = (x, y)
            yield self._prepare(x, y)
            done += 1
        while done < self.steps:
            if first is None:
                raise DataError(
                    f"data: this worker's share of the training split ({self.rows} images "
                    "expected) held no readable image"
                )
            self.padded += len(first[1])
            yield self._prepare(*first)
            done += 1
        if self.padded or self.drained:
            log.info(
                "rank %d: %d rows repeated, %d left over", self.rank, self.padded, self.drained
            )

    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).float().div_(255.0)  # (B, C, H, W) in [0, 1]
        if self.augment is not None:
            x = self.augment(x)
        return x, y.to(self.device, non_blocking=True)


class StreamEval:
    """A validation or test share: every image once, float in [0, 1] on the device."""

    def __init__(
        self, stream: Stream, split: str, *, batch_size: int, device: torch.device, spec: DataSpec
    ) -> None:
        self.share = _Share(
            stream.sources[split],
            split,
            stream.meta.sizes[split],
            spec.max_bad_fraction,
            spec.prefetch_batches,
        )
        self.batch_size, self.device = batch_size, device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.share.good(self.batch_size):
            yield x.to(self.device, non_blocking=True).float().div_(255.0), y.to(self.device)


def skipped_count(*loaders: Any) -> int:
    """Unreadable images the loaders' first passes skipped (this worker's share)."""
    return sum(len(loader.share.skipped or []) for loader in loaders)
