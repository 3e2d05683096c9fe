"""Data sets: the bundled digits, a folder of class subfolders, packed parquet shards
(`stride data pack`), torchvision's MNIST, Fashion-MNIST and CIFAR-10 from a local
root, and synthetic images.

Folder and parquet data may also stream through Ray Data instead (`pipeline.streaming`,
`data.streaming`); what follows is the in-memory path. Every source loads into
`Splits`: uint8 images (N, C, H, W) with a `scale` that maps them to [0, 1], int64
labels, and class names. Normalisation (mean and std of
the training split) is applied per batch in the train loop and travels with the
exported model; augmentation (torchvision transforms v2) is per sample, training
split only. Nothing is downloaded unless the config says `download: true`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.datafiles import (
    IMAGE_SUFFIXES,
    DataError,
    DataRoot,
    FolderLayout,
    decode_image,
    folder_classes,
    read_bytes,
    scan_folder,
)
from pipeline.registry import Registry
from pipeline.schema import AugmentSpec, ConfigError, DataSpec

__all__ = ["IMAGE_SUFFIXES", "DataError"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataInfo:
    """What the model builder needs to know before any image is read."""

    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    class_names: tuple[str, ...]


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    info: DataInfo
    scale: float  # images / scale lie in [0, 1]
    mean: tuple[float, ...]  # per channel, of train images / scale
    std: tuple[float, ...]
    skipped: int = 0  # unreadable images left out (data.max_bad_fraction)


Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel mean and std


@dataclass(frozen=True)
class Parts:
    """What a source with its own split folders loads: its parts by name (`all`, or
    `train` with optional `val` and `test`), and the normalisation it carries, if any."""

    parts: dict[str, Split]
    info: DataInfo
    scale: float
    stats: Stats | None = None
    skipped: int = 0  # unreadable images left out (data.max_bad_fraction)


@dataclass(frozen=True)
class DataSource:
    describe: Callable[[DataSpec], DataInfo]
    load: Callable[[DataSpec], tuple[Split, Split | None, DataInfo, float]]  # train(+val), test
    parts: Callable[[DataSpec], Parts] | None = None  # instead of load: split folders


DATASETS: Registry[DataSource] = Registry("data set")


def describe(spec: DataSpec) -> DataInfo:
    """Input shape, number of classes and class names, without loading the images."""
    return DATASETS.get(spec.name).describe(spec)


def load_splits(spec: DataSpec) -> Splits:
    """Load a data set and split it: stratified by `split_seed`, the same for every run."""
    source = DATASETS.get(spec.name)
    if source.parts is not None:
        return _splits_of_parts(source.parts(spec), spec)
    full, test, info, scale = source.load(spec)
    if test is None:
        full, test = _stratified_split(full, spec.test_fraction, spec.split_seed)
        val_share = spec.val_fraction / (1.0 - spec.test_fraction)  # of all images
    else:
        val_share = spec.val_fraction  # of the source's own training images
    train, val = _stratified_split(full, val_share, spec.split_seed + 1)
    for name, split in (("train", train), ("validation", val), ("test", test)):
        if len(split) == 0:
            raise ConfigError(
                f"data: the {name} split is empty; use more images or other fractions"
            )
    mean, std = (
        channel_stats(train, scale)
        if spec.normalize
        else ((0.0,) * info.input_shape[0], (1.0,) * info.input_shape[0])
    )
    return Splits(train, val, test, info, scale, mean, std)


def _splits_of_parts(loaded: Parts, spec: DataSpec) -> Splits:
    plan = split_plan({k: p.labels.numpy() for k, p in loaded.parts.items()}, spec)
    chosen = {
        name: Split(loaded.parts[part].images[idx], loaded.parts[part].labels[idx])
        for name, (part, idx) in plan.items()
    }
    train, val, test = chosen["train"], chosen["val"], chosen["test"]
    c = loaded.info.input_shape[0]
    if not spec.normalize:
        mean, std = (0.0,) * c, (1.0,) * c
    elif loaded.stats is not None:
        mean, std = loaded.stats
    else:
        mean, std = channel_stats(train, loaded.scale)
    return Splits(train, val, test, loaded.info, loaded.scale, mean, std, loaded.skipped)


def split_plan(parts: dict[str, np.ndarray], spec: DataSpec) -> dict[str, tuple[str, torch.Tensor]]:
    """Which images of which part make each split: {split: (part, indices)}.

    `parts` holds the labels of each part a source has: `all` (one undivided set), or
    `train` with optional `val` and `test` folders. A split the source lacks is drawn
    from `all`/`train`, stratified by class and fixed by `split_seed`: the test split
    first (`test_fraction` of the images), then the validation split (`val_fraction` of
    all images, or of `train` when the source has its own test split), exactly as the
    undivided in-memory sources are split."""
    base = "all" if "all" in parts else "train"
    labels = parts[base]
    idx = np.arange(len(labels))
    out: dict[str, tuple[str, torch.Tensor]] = {}
    if "test" in parts:
        out["test"] = ("test", torch.arange(len(parts["test"])))
        val_share = spec.val_fraction
    else:
        idx, held = stratified_indices(labels, spec.test_fraction, spec.split_seed)
        out["test"] = (base, torch.from_numpy(held))
        val_share = spec.val_fraction / (1.0 - spec.test_fraction)
    if "val" in parts:
        out["val"] = ("val", torch.arange(len(parts["val"])))
        out["train"] = (base, torch.from_numpy(idx))
    else:
        keep, held = stratified_indices(labels[idx], val_share, spec.split_seed + 1)
        out["val"] = (base, torch.from_numpy(idx[held]))
        out["train"] = (base, torch.from_numpy(idx[keep]))
    for name in ("train", "val", "test"):
        if len(out[name][1]) == 0:
            raise ConfigError(
                f"data: the {'validation' if name == 'val' else name} split is empty; "
                "use more images or other fractions"
            )
    return {name: out[name] for name in ("train", "val", "test")}


def stratified_indices(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) positions, each sorted: `fraction` of every class held out."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as exc:  # too few images of a class to stratify
        raise ConfigError(f"data: cannot split {len(idx)} images by class: {exc}") from None
    return np.sort(keep), np.sort(held)


def _stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    keep, held = stratified_indices(split.labels.numpy(), fraction, seed)
    return (
        Split(split.images[keep], split.labels[keep]),
        Split(split.images[held], split.labels[held]),
    )


def channel_stats(split: Split, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a split's images mapped to [0, 1]."""
    x = split.images.double() / scale  # (N, C, H, W)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# ---------------------------------------------------------------- sources


def _digits_info(spec: DataSpec) -> DataInfo:
    return DataInfo((1, 8, 8), 10, tuple(str(i) for i in range(10)))


def _digits_load(spec: DataSpec) -> tuple[Split, Split | None, DataInfo, float]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return Split(images, labels), None, _digits_info(spec), 16.0


_TORCHVISION = {
    "mnist": ("MNIST", (1, 28, 28)),
    "fashion_mnist": ("FashionMNIST", (1, 28, 28)),
    "cifar10": ("CIFAR10", (3, 32, 32)),
}


def _tv_info(name: str) -> Callable[[DataSpec], DataInfo]:
    def info(spec: DataSpec) -> DataInfo:
        from torchvision import datasets

        cls = getattr(datasets, _TORCHVISION[name][0])
        return DataInfo(_TORCHVISION[name][1], len(cls.classes), tuple(cls.classes))

    return info


def _tv_load(name: str) -> Callable[[DataSpec], tuple[Split, Split | None, DataInfo, float]]:
    def load(spec: DataSpec) -> tuple[Split, Split | None, DataInfo, float]:
        from torchvision import datasets

        if spec.root is None:
            raise ConfigError(
                f"data.root: {name} needs a local folder (and --download to fetch it)"
            )
        cls = getattr(datasets, _TORCHVISION[name][0])
        parts = []
        for train in (True, False):
            try:
                ds = cls(spec.root, train=train, download=spec.download)
            except RuntimeError as exc:
                raise ConfigError(
                    f"data: {name} not found under {spec.root} ({exc}); pass --download to fetch it"
                ) from None
            images = torch.as_tensor(np.asarray(ds.data))
            images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
            parts.append(Split(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)))
        return parts[0], parts[1], _tv_info(name)(spec), 255.0

    return load


def _folder_shape(spec: DataSpec) -> tuple[int, int, int]:
    if spec.image_size is None:
        raise ConfigError("data.image_size: the folder data set needs [height, width]")
    channels = spec.channels or 3
    if channels not in (1, 3):
        raise ConfigError(f"data.channels: {channels} is not allowed; allowed: 1, 3")
    return (channels, *spec.image_size)


def folder_layout(spec: DataSpec) -> FolderLayout:
    """The folder data set of a config, listed (local or on an object store)."""
    if spec.root is None:
        raise ConfigError("data.root: the folder data set needs root: a folder of class subfolders")
    return scan_folder(DataRoot.parse(spec.root))


def _folder_info(spec: DataSpec) -> DataInfo:
    if spec.root is None:
        raise ConfigError("data.root: the folder data set needs root: a folder of class subfolders")
    shape = _folder_shape(spec)
    classes, _ = folder_classes(DataRoot.parse(spec.root))
    return DataInfo(shape, len(classes), classes)


def read_images(
    root: DataRoot,
    paths: list[str],
    labels: list[int],
    shape: tuple[int, int, int],
    max_bad_fraction: float = 0.0,
    part: str = "all",
) -> tuple[Split, list[str]]:
    """Decode image files into a Split (in memory), leaving out unreadable ones while
    `max_bad_fraction` of them allows (their notes are returned); past that, a DataError
    names the first."""
    from pipeline.packed import check_bad

    c, h, w = shape
    fs, _ = root.filesystem()
    images = np.empty((len(paths), c, h, w), dtype=np.uint8)
    keep = np.ones(len(paths), dtype=bool)
    bad: list[str] = []
    for i, path in enumerate(paths):
        try:
            images[i] = decode_image(read_bytes(root, fs, path), c, (h, w))
        except ValueError as exc:
            if isinstance(exc, DataError):
                raise
            bad.append(f"cannot read image {root.shown(path)}: {exc}")
            keep[i] = False
            check_bad(bad, len(paths), max_bad_fraction, part)
    split = Split(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64))
    if bad:
        for note in bad:
            log.warning("data: skipped: %s", note)
        idx = torch.from_numpy(np.flatnonzero(keep))
        split = Split(split.images[idx], split.labels[idx])
    return split, bad


def _folder_parts(spec: DataSpec) -> Parts:
    shape = _folder_shape(spec)
    layout = folder_layout(spec)
    info = DataInfo(shape, len(layout.classes), layout.classes)
    parts, skipped = {}, 0
    for name, part in layout.parts.items():
        parts[name], bad = read_images(
            layout.root, part.paths, part.labels, shape, spec.max_bad_fraction, name
        )
        skipped += len(bad)
    return Parts(parts, info, 255.0, skipped=skipped)


def _parquet_info(spec: DataSpec) -> DataInfo:
    from pipeline.packed import parquet_manifest

    manifest = parquet_manifest(spec)
    return DataInfo(manifest.shape, len(manifest.class_names), manifest.class_names)


def _parquet_parts(spec: DataSpec) -> Parts:
    from pipeline.packed import parquet_manifest, read_packed_split

    manifest = parquet_manifest(spec)
    root = DataRoot.parse(spec.root or "")
    parts, skipped = {}, 0
    for name in ("train", "val", "test"):
        images, labels, bad = read_packed_split(root, manifest, name, spec.max_bad_fraction)
        parts[name] = Split(images, labels)
        skipped += len(bad)
    info = DataInfo(manifest.shape, len(manifest.class_names), manifest.class_names)
    return Parts(parts, info, 255.0, (manifest.mean, manifest.std), skipped)


def _no_load(spec: DataSpec) -> tuple[Split, Split | None, DataInfo, float]:
    raise AssertionError("a source with parts is loaded by its parts")


def _synthetic_info(spec: DataSpec) -> DataInfo:
    h, w = spec.image_size or (32, 32)
    k = spec.num_classes or 10
    return DataInfo((spec.channels or 3, h, w), k, tuple(f"class{i}" for i in range(k)))


def _synthetic_load(spec: DataSpec) -> tuple[Split, Split | None, DataInfo, float]:
    """Class prototypes plus noise: learnable, any shape, fixed by split_seed."""
    info = _synthetic_info(spec)
    g = torch.Generator().manual_seed(spec.split_seed)
    protos = torch.rand((info.num_classes, *info.input_shape), generator=g)
    labels = torch.arange(spec.num_samples) % info.num_classes
    noise = torch.randn((spec.num_samples, *info.input_shape), generator=g) * 0.25
    images = ((protos[labels] * 0.6 + 0.2 + noise).clamp(0, 1) * 255).to(torch.uint8)
    return Split(images, labels), None, info, 255.0


DATASETS.add(
    "digits",
    DataSource(_digits_info, _digits_load),
    "scikit-learn's bundled 8x8 handwritten digits, 1,797 images, 10 classes (default)",
)
DATASETS.add(
    "folder",
    DataSource(_folder_info, _no_load, _folder_parts),
    "your images: root/<class>/*.png|jpg (or root/train, root/val, root/test); image_size, "
    "channels; a path or URI",
)
DATASETS.add(
    "parquet",
    DataSource(_parquet_info, _no_load, _parquet_parts),
    "parquet shards and manifest.json made by stride data pack; a path or URI",
)
for _name, _what in (
    ("mnist", "MNIST 28x28 digits"),
    ("fashion_mnist", "Fashion-MNIST 28x28"),
    ("cifar10", "CIFAR-10 32x32 colour"),
):
    DATASETS.add(
        _name,
        DataSource(_tv_info(_name), _tv_load(_name)),
        f"{_what} through torchvision from data.root (--download fetches it)",
    )
DATASETS.add(
    "synthetic",
    DataSource(_synthetic_info, _synthetic_load),
    "random class prototypes plus noise, any shape: image_size, channels, num_classes",
)


# ---------------------------------------------------------------- batches


def build_augment(
    spec: AugmentSpec, size: tuple[int, int]
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The training augmentation of a config, or None when it is off: a `BatchAugment`."""
    if not (
        spec.crop_padding > 0 or spec.rotation > 0 or spec.horizontal_flip or spec.vertical_flip
    ):
        return None
    return BatchAugment(spec, size)


class BatchAugment:
    """Random crop after zero padding, rotation and flips, drawn per image but applied
    to a whole batch (N, C, H, W) in one `grid_sample`.

    Per image, in this order: a crop of the original size from the image padded by
    `crop_padding` zeros (a shift by a whole number of pixels in [-p, p] on each axis),
    a rotation by an angle uniform in [-rotation, rotation] degrees about the centre,
    then each flip with probability 1/2. Pixels come from the nearest source pixel;
    what falls outside the image is 0. One affine map per image, composed in pixel
    units (so a non-square image rotates without shearing): what per-image torchvision
    transforms compute, at the cost of one small batched operation instead of a Python
    call per image.
    """

    def __init__(self, spec: AugmentSpec, size: tuple[int, int]) -> None:
        self.spec = spec
        self.height, self.width = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        n = x.shape[0]
        spec = self.spec
        # pixel units about the centre: p_in = R^-1 (flip(p_out)) + shift
        half = torch.tensor([self.width / 2, self.height / 2], dtype=torch.float32)
        angle = (torch.rand(n) * 2 - 1) * math.radians(spec.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        flip = torch.ones(n, 2)
        if spec.horizontal_flip:
            flip[:, 0] = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
        if spec.vertical_flip:
            flip[:, 1] = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
        linear = linear * flip[:, None, :]  # flip the output coordinates first
        p = spec.crop_padding
        shift = torch.randint(-p, p + 1, (n, 2)).float() if p > 0 else torch.zeros(n, 2)
        # to normalised coordinates: n_in = D^-1 (A D n_out + shift), D = diag(half)
        theta = torch.empty(n, 2, 3)
        theta[:, :, :2] = linear * half[None, None, :] / half[None, :, None]
        theta[:, :, 2] = shift / half
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class ImageDataset(torch.utils.data.Dataset):
    """A split as float images in [0, 1], optionally augmented (per image, in a batch).

    `__getitems__` fetches a whole batch at once (the DataLoader uses it), so a
    batch costs one indexing operation when augmentation is off.
    """

    def __init__(
        self,
        split: Split,
        scale: float,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.split = split
        self.scale = scale
        self.augment = augment

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.split.images[idx].float().div_(self.scale)  # (B, C, H, W) in [0, 1]
        if self.augment is not None:
            x = self.augment(x)  # per-image random parameters, one batched operation
        return x, self.split.labels[idx]


def pass_batch(batch: Any) -> Any:
    """collate_fn for ImageDataset: `__getitems__` already made the batch."""
    return batch


def make_loader(
    dataset: ImageDataset, batch_size: int, *, shuffle: bool, seed: int
) -> torch.utils.data.DataLoader:
    """A DataLoader that Ray's prepare_data_loader can shard (no worker processes:
    the images are in memory and a batch is one indexing operation)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=pass_batch, generator=generator
    )
