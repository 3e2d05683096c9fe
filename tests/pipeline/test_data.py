from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ConfigError, DataSpec, parse_config
from pipeline.data import DataError, ImageDataset, build_augment, describe, load_splits, make_loader


def test_digits_split_is_stratified_fixed_and_complete() -> None:
    a = load_splits(DataSpec())
    b = load_splits(DataSpec())
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 270, 270)
    assert torch.equal(a.test.labels, b.test.labels) and torch.equal(a.test.images, b.test.images)
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 26 and counts.max() <= 28  # stratified: ~27 per class
    other = load_splits(DataSpec(split_seed=1))
    assert not torch.equal(other.test.images, a.test.images)
    x = a.train.images.double() / a.scale
    assert a.mean[0] == pytest.approx(x.mean().item())
    assert a.std[0] == pytest.approx(x.std().item())
    assert a.info.class_names == tuple("0123456789")


def test_folder_of_class_subfolders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}{suffix}"
            )
    spec = parse_config(
        {
            "data": {
                "name": "folder",
                "root": str(tmp_path),
                "image_size": [6, 5],
                "channels": 1,
                "val_fraction": 0.2,
                "test_fraction": 0.2,
            }
        }
    ).data
    assert describe(spec).input_shape == (1, 6, 5)
    splits = load_splits(spec)
    assert splits.info.class_names == ("cat", "dog")
    assert splits.train.images.shape[1:] == (1, 6, 5)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20
    (tmp_path / "cat" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        load_splits(spec)


def test_folder_needs_root_and_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs root"):
        describe(DataSpec(name="folder"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        describe(DataSpec(name="folder", root=str(tmp_path)))


def test_torchvision_sets_never_download_unless_asked(tmp_path: Path) -> None:
    spec = DataSpec(name="mnist", root=str(tmp_path))
    assert describe(spec).input_shape == (1, 28, 28)
    with pytest.raises(ConfigError, match="pass --download"):
        load_splits(spec)
    assert not any(tmp_path.rglob("*.gz"))


def test_synthetic_any_shape() -> None:
    spec = DataSpec(name="synthetic", image_size=(5, 7), channels=2, num_classes=4, num_samples=100)
    s = load_splits(spec)
    assert s.info.input_shape == (2, 5, 7) and s.train.images.shape[1:] == (2, 5, 7)
    assert set(s.train.labels.tolist()) == {0, 1, 2, 3}


def test_augmentation_is_per_sample_and_keeps_shape() -> None:
    s = load_splits(DataSpec())
    aug = build_augment(
        parse_config({}, ["data.augment.crop_padding=2", "data.augment.rotation=20"]).data.augment,
        (8, 8),
    )
    torch.manual_seed(0)
    ds = ImageDataset(s.train, s.scale, aug)
    x, y = ds.__getitems__([0, 0, 0, 0])
    assert x.shape == (4, 1, 8, 8) and y.shape == (4,)
    assert not all(torch.equal(x[0], x[i]) for i in range(1, 4))  # differs per sample
    plain = ImageDataset(s.train, s.scale)
    batch = next(iter(make_loader(plain, 32, shuffle=False, seed=0)))
    assert batch[0].shape == (32, 1, 8, 8) and batch[0].min() >= 0 and batch[0].max() <= 1
    assert build_augment(parse_config({}).data.augment, (8, 8)) is None


def _augment(*overrides: str) -> Any:
    spec = parse_config({}, list(overrides)).data.augment
    return build_augment(spec, (5, 7))


def test_batched_augmentation_matches_its_definition() -> None:
    """Crop after padding is a whole-pixel shift with zeros coming in, a flip is a flip,
    a rotation by 0 changes nothing, and each image of a batch gets its own draw."""
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7) + 1
    torch.manual_seed(0)
    assert torch.equal(_augment("data.augment.rotation=0.000001")(x), x)
    flip = _augment("data.augment.horizontal_flip=true")
    torch.manual_seed(1)
    out = flip(x)
    for i in range(2):  # each image either flipped left-right or unchanged
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    crop = _augment("data.augment.crop_padding=2")
    for seed in range(20):
        torch.manual_seed(seed)
        out = crop(x)
        for i in range(2):
            padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
            windows = [padded[:, r : r + 5, c : c + 7] for r in range(5) for c in range(5)]
            assert any(torch.equal(out[i], w) for w in windows), f"seed {seed} image {i}"
    torch.manual_seed(0)
    rotated = _augment("data.augment.rotation=30")(x.repeat(8, 1, 1, 1))
    assert len({tuple(r.flatten().tolist()) for r in rotated[::2]}) > 1  # drawn per image
    assert rotated.shape == (16, 3, 5, 7) and set(rotated.unique().tolist()) <= {
        0.0,
        *x.unique().tolist(),
    }
