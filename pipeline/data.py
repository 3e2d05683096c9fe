"""Data sets: the bundled digits, a folder of class subfolders, torchvision's MNIST,
Fashion-MNIST and CIFAR-10 from a local root, and synthetic images.

Every source loads into `Splits`: uint8 images (N, C, H, W) with a `scale` that
maps them to [0, 1], int64 labels, and class names. Normalisation (mean and std of
the training split) is applied per batch in the train loop and travels with the
exported model; augmentation (torchvision transforms v2) is per sample, training
split only. Nothing is downloaded unless the config says `download: true`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.registry import Registry
from pipeline.schema import AugmentSpec, ConfigError, DataSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


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


@dataclass(frozen=True)
class DataSource:
    describe: Callable[[DataSpec], DataInfo]
    load: Callable[[DataSpec], tuple[Split, Split | None, DataInfo, float]]  # train(+val), test


DATASETS: Registry[DataSource] = Registry("data set")


def describe(spec: DataSpec) -> DataInfo:
    """Input shape, number of classes and class names, without loading the images."""
    return DATASETS.get(spec.name).describe(spec)


def load_splits(spec: DataSpec) -> Splits:
    """Load a data set and split it: stratified by `split_seed`, the same for every run."""
    full, test, info, scale = DATASETS.get(spec.name).load(spec)
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


def _stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(split))
    labels = split.labels.numpy()
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as exc:  # too few images of a class to stratify
        raise ConfigError(f"data: cannot split {len(idx)} images by class: {exc}") from None
    keep, held = np.sort(keep), np.sort(held)
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


def _folder_classes(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_info(spec: DataSpec) -> DataInfo:
    if spec.root is None:
        raise ConfigError("data.root: the folder data set needs root: a folder of class subfolders")
    root = Path(spec.root)
    if not root.is_dir():
        raise ConfigError(f"data.root: {root} is not a folder")
    base = root / "train" if (root / "train").is_dir() else root
    classes = _folder_classes(base)
    if len(classes) < 2:
        raise ConfigError(f"data.root: {base} needs at least 2 class subfolders, found {classes}")
    if spec.image_size is None:
        raise ConfigError("data.image_size: the folder data set needs [height, width]")
    channels = spec.channels or 3
    if channels not in (1, 3):
        raise ConfigError(f"data.channels: {channels} is not allowed; allowed: 1, 3")
    return DataInfo((channels, *spec.image_size), len(classes), tuple(classes))


def _read_folder(base: Path, classes: tuple[str, ...], info: DataInfo) -> Split:
    from PIL import Image, UnidentifiedImageError

    c, h, w = info.input_shape
    images, labels = [], []
    for index, name in enumerate(classes):
        folder = base / name
        files = (
            sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if folder.is_dir()
            else []
        )
        for path in files:
            try:
                with Image.open(path) as img:
                    mode = "L" if c == 1 else "RGB"
                    resized = img.convert(mode).resize((w, h), Image.Resampling.BILINEAR)
                    array = np.asarray(resized, dtype=np.uint8)
            except (OSError, UnidentifiedImageError) as exc:
                raise ConfigError(f"data: cannot read image {path}: {exc}") from None
            images.append(array.reshape(h, w, c).transpose(2, 0, 1))
            labels.append(index)
    if not images:
        raise ConfigError(f"data: no PNG or JPEG images under {base}")
    return Split(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))


def _folder_load(spec: DataSpec) -> tuple[Split, Split | None, DataInfo, float]:
    info = _folder_info(spec)
    root = Path(spec.root or ".")
    if (root / "train").is_dir():
        train = _read_folder(root / "train", info.class_names, info)
        test = (
            _read_folder(root / "test", info.class_names, info)
            if (root / "test").is_dir()
            else None
        )
        return train, test, info, 255.0
    return _read_folder(root, info.class_names, info), None, info, 255.0


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
    DataSource(_folder_info, _folder_load),
    "your images: root/<class>/*.png|jpg (or root/train, root/test); image_size, channels",
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
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
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
