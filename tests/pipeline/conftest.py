"""Fixtures for the training core: small configs that train in seconds."""

from __future__ import annotations

import pytest

from pipeline.config import RunConfig, parse_config


def tiny_config(**overrides: object) -> RunConfig:
    """A small CNN on the digits: 4 epochs, no augmentation, no progress bar."""
    data = {
        "seed": 0,
        "data": {"name": "digits"},
        "model": {
            "name": "tiny",
            "blocks": [
                {"type": "conv", "channels": 8, "kernel": 3, "padding": "same", "batch_norm": True},
                {"type": "pool", "kind": "max", "size": 2},
            ],
            "head": {"hidden": [16]},
        },
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 4, "batch_size": 64, "progress": False},
        "early_stopping": {"enabled": False},
    }
    items = [f"{k}={v}" for k, v in overrides.items()]
    return parse_config(data, items)


@pytest.fixture
def tiny() -> RunConfig:
    return tiny_config()
