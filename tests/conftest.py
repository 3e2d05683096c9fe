"""Fixtures shared across the test tree."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, float]]:
    """One local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    from pipeline.ray_train import ensure_ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    resources = ensure_ray()
    yield resources
    ray.shutdown()
