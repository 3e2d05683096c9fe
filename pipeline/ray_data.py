"""The Ray Data side of a stream: datasets read and decoded in Ray Data tasks, and how
Ray Train splits them across workers.

Every split is `read_binary_files` over its files (loose images, or whole parquet
shards whose sha256 the decoding task checks) followed by a decoding `map_batches`
(`pipeline.packed`); both reserve `data.task_cpus` per task, so they run on any node
with CPUs to spare, CPU-only nodes included. The training split's file order is
shuffled per epoch from the run's seed (`FileShuffleConfig`, reseeded every
execution); validation and test are read in their fixed order.

`SplitDataConfig` is Ray Train's DataConfig with one change: the training split is
split with `equal=True` (every rank gets as many rows), validation and test with
`equal=False`, which drops nothing, so every image is scored exactly once.

A `plan` here is a `pipeline.streaming.StreamPlan` (typed loosely: that module imports
this one).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import ray.data
import ray.train
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from pipeline.packed import BAD, FATAL, OK, FolderDecoder, ShardDecoder
from pipeline.schema import DataSpec

SPLITS = ("train", "val", "test")

FILES_PER_TASK = 64  # loose images decoded per map_batches call


class ImageCollate(NumpyBatchCollateFn):
    """A numpy batch of image rows to (uint8 images, int64 labels, status, notes) on the
    CPU; the images stay uint8 until the device."""

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        with warnings.catch_warnings():  # read-only arrays: nothing writes to them
            warnings.simplefilter("ignore", UserWarning)
            images = torch.from_numpy(np.ascontiguousarray(batch["image"]))
            labels = torch.from_numpy(np.asarray(batch["label"], dtype=np.int64))
        return images, labels, np.asarray(batch["status"]), batch["note"]


def init_ray() -> None:
    """Ray for a stream read in this process (the plain loop): RAY_ADDRESS's cluster or
    a local instance, quiet as `pipeline.ray_train.ensure_ray` makes it."""
    import logging
    import os

    if not ray.is_initialized():
        ray.init(
            include_dashboard=False,
            log_to_driver=os.environ.get("STRIDE_RAY_LOGS") == "1",
            logging_level=logging.WARNING,
        )


def quiet_progress() -> None:
    """No Ray Data progress bars or start messages: Stride draws its own progress."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def split_dataset(plan: Any, split: str, spec: DataSpec, seed: int | None) -> Any:
    """One split as a Ray Dataset of image rows; `seed` shuffles the file order (per
    execution, i.e. per epoch), None keeps it."""
    meta = plan.meta
    root = meta.root
    fs, _ = root.filesystem()
    shuffle = None if seed is None else ray.data.FileShuffleConfig(seed=seed)
    files = plan.files[split]
    cpus = spec.task_cpus
    ds = ray.data.read_binary_files(
        files,
        filesystem=fs,
        include_paths=True,
        shuffle=shuffle,
        num_cpus=cpus,
        override_num_blocks=read_blocks(len(files)) if meta.source == "folder" else None,
    )
    if meta.source == "parquet":
        checksums = {p: plan.checksums[p] for p in files}
        decoder: Any = ShardDecoder(
            root, meta.shape, meta.encoding, len(meta.class_names), checksums
        )
        ds = ds.map_batches(decoder, batch_size=1, num_cpus=cpus)
    else:
        decoder = FolderDecoder(root, plan.bases[split], meta.class_names, meta.shape)
        ds = ds.map_batches(decoder, batch_size=FILES_PER_TASK, num_cpus=cpus)
    limit_object_store(ds.context.execution_options, spec.object_store_mb)
    return ds


def limit_object_store(options: Any, megabytes: float) -> None:
    """Cap the object store memory a split's execution holds (data.object_store_mb): the
    blocks in flight, which every process that reads them also maps."""
    options.resource_limits = options.resource_limits.copy(
        object_store_memory=int(megabytes * 2**20)
    )


def read_blocks(files: int) -> int:
    """Read tasks for loose image files: about FILES_PER_TASK files each (Ray's default
    makes a task of a few small files, whose fixed cost then outweighs the decoding)."""
    return max(1, min(256, -(-files // FILES_PER_TASK)))


def build_datasets(plan: Any, spec: DataSpec, seed: int) -> dict[str, Any]:
    """The three splits; the training split's file order shuffled per epoch from `seed`."""
    quiet_progress()
    return {
        split: split_dataset(plan, split, spec, seed if split == "train" else None)
        for split in SPLITS
    }


def folder_stats(plan: Any, spec: DataSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a folder's training split, per channel of the images in [0, 1], in
    one Ray Data pass before training (exact integer sums in the tasks, the mean and the
    (n - 1) std here, as the in-memory path computes them); more unreadable images than
    data.max_bad_fraction allows fail here already, naming the first."""
    from pipeline.datafiles import DataError
    from pipeline.packed import check_bad

    quiet_progress()
    ds = split_dataset(plan, "train", spec, None).map_batches(
        _sums, batch_size=None, num_cpus=spec.task_cpus
    )
    c = plan.meta.shape[0]
    total, squares, count = np.zeros(c, np.float64), np.zeros(c, np.float64), 0
    notes: list[str] = []
    for row in ds.iter_rows():
        if row["fatal"]:
            raise DataError(f"data: {row['fatal']}")
        total += np.asarray(row["sum"], dtype=np.float64)
        squares += np.asarray(row["squares"], dtype=np.float64)
        count += int(row["pixels"])
        notes.extend(n for n in str(row["bad"]).split("\n") if n)
    check_bad(notes, plan.meta.sizes["train"], spec.max_bad_fraction, "train")
    n = max(count, 2)
    mean = total / 255.0 / n
    var = (squares / 255.0**2 - n * mean**2) / (n - 1)
    std = np.sqrt(np.clip(var, 0.0, None)).clip(min=1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _sums(batch: dict[str, Any]) -> dict[str, Any]:
    """Per-channel sums of one block's readable images (int64: exact)."""
    status = np.asarray(batch["status"])
    images = np.asarray(batch["image"])[status == OK].astype(np.int64)  # (N, C, H, W)
    fatal = [str(n) for n, s in zip(batch["note"], status, strict=True) if s == FATAL]
    bad = [str(n) for n, s in zip(batch["note"], status, strict=True) if s == BAD]
    return {
        "sum": [images.sum(axis=(0, 2, 3))],
        "squares": [(images * images).sum(axis=(0, 2, 3))],
        "pixels": [images.shape[0] * images.shape[2] * images.shape[3]],
        "bad": ["\n".join(bad)],
        "fatal": [fatal[0] if fatal else ""],
    }


class SplitDataConfig(ray.train.DataConfig):
    """Ray Train's DataConfig, but validation and test are split without equalising
    (`equal=False` drops no row): every image is scored exactly once across workers;
    each split's execution keeps the object store budget of `object_store_mb`."""

    def __init__(self, object_store_mb: float) -> None:
        super().__init__()
        self.object_store_mb = object_store_mb

    def configure(
        self,
        datasets: dict[str, Any],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            if ds.name is None:
                ds.set_name(name)
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(name)
            limit_object_store(ds.context.execution_options, self.object_store_mb)
            splits = ds.streaming_split(
                world_size, equal=name == "train", locality_hints=worker_node_ids
            )
            for i, split in enumerate(splits):
                output[i][name] = split
        return output
