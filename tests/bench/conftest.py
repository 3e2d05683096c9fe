"""Skip the bench tests where perf_analyzer cannot run (no .venv-triton or missing libraries)."""

from __future__ import annotations

import pytest

from bench.servers import PERF_ANALYZER, perf_analyzer_unusable


@pytest.fixture(scope="session")
def perf_analyzer() -> str:
    """perf_analyzer's path, or a skip saying why it cannot run here."""
    reason = perf_analyzer_unusable()
    if reason:
        pytest.skip(reason)
    return str(PERF_ANALYZER)
