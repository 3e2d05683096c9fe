"""Fixtures shared across the test tree."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, float]]:
    """One local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    from pipeline.ray_train import ensure_ray

    # Object store credentials come from the environment of every Ray node, as on a real
    # cluster; the local S3 server of the tests (moto) takes any.
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "stride-test"),
        ("AWS_SECRET_ACCESS_KEY", "stride-test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        os.environ.setdefault(key, value)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    resources = ensure_ray()
    yield resources
    ray.shutdown()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` skip cleanly on machines without CUDA."""
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    if marked and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in marked:
            item.add_marker(skip)
