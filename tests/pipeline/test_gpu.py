"""GPU paths: mixed precision, channels_last, batches kept on the device.

The DeviceLoader tests run anywhere (on the CPU device); the rest are marked `gpu`
and skip without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import DataSpec
from pipeline.data import load_splits
from pipeline.run import train_local
from pipeline.train import DeviceLoader, Precision
from tests.pipeline.conftest import tiny_config


def test_device_loader_shards_like_a_distributed_sampler() -> None:
    split = load_splits(DataSpec()).train  # 1257 images
    loaders = [
        DeviceLoader(split, 16.0, 100, torch.device("cpu"), seed=3, rank=r, world_size=2)
        for r in range(2)
    ]
    for loader in loaders:
        loader.set_epoch(1)
    seen = [torch.cat([y for _, y in loader]) for loader in loaders]
    assert len(seen[0]) == len(seen[1]) == 629  # ceil(1257 / 2), padded by one
    assert len(loaders[0]) == 7  # ceil(629 / 100) batches
    x, _ = next(iter(loaders[0]))
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    first = [y for _, y in loaders[0]]
    loaders[0].set_epoch(2)
    second = [y for _, y in loaders[0]]
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # reshuffled


def test_precision_is_fp32_on_the_cpu() -> None:
    assert Precision.choose(tiny_config(), torch.device("cpu")).name == "fp32"


@pytest.mark.gpu
def test_bf16_channels_last_run_on_cuda(tmp_path: Path) -> None:
    cfg = tiny_config(**{"scaling.use_gpu": True, "scaling.precision": "auto"})
    precision = Precision.choose(cfg, torch.device("cuda"))
    assert precision.name in ("bf16", "fp16") and precision.channels_last
    run, summary = train_local(cfg, runs=tmp_path, experiment="gpu", name="r")
    assert summary.device is not None and summary.device.startswith("cuda")
    assert summary.precision == precision.name
    assert summary.test_accuracy is not None and summary.test_accuracy > 0.8
    assert [r.epoch for r in run.read_metrics()] == [1, 2, 3, 4]


@pytest.mark.gpu
def test_fp16_uses_a_grad_scaler(tmp_path: Path) -> None:
    cfg = tiny_config(**{"scaling.use_gpu": True, "scaling.precision": "fp16"})
    precision = Precision.choose(cfg, torch.device("cuda"))
    assert precision.scaler is not None
    _, summary = train_local(cfg, runs=tmp_path, experiment="gpu", name="fp16")
    assert summary.precision == "fp16"
    assert summary.test_accuracy is not None and summary.test_accuracy > 0.8


@pytest.mark.gpu
@pytest.mark.ray
def test_streamed_digits_train_on_cuda_with_augmentation(
    ray_cluster: object, tmp_path: Path
) -> None:
    from pipeline.datafiles import DataRoot
    from pipeline.packing import pack

    out = tmp_path / "digits"
    pack(DataSpec(), DataRoot.parse(str(out)))
    cfg = tiny_config(
        **{
            "scaling.use_gpu": True,
            "data.name": "parquet",
            "data.root": str(out),
            "data.streaming": "true",
            "data.augment.crop_padding": 1,  # BatchAugment on the device
        }
    )
    _, summary = train_local(cfg, runs=tmp_path / "runs", experiment="gpu", name="streamed")
    assert summary.device is not None and summary.device.startswith("cuda")
    assert summary.test_accuracy is not None and summary.test_accuracy > 0.8
