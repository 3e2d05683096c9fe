"""Fixtures of the analysis tests: synthetic run stores with known values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services.analysis.runstore import write_known_store


@pytest.fixture
def known_store(tmp_path: Path) -> Path:
    """A run store with experiment `opt`: adam and sgd, seeds 1-3, three epochs each."""
    return write_known_store(tmp_path / "runs")
