"""Skip the bench tests where perf_analyzer cannot run (no .venv-triton or missing libraries)."""

from __future__ import annotations

import subprocess

import pytest

from bench.servers import PERF_ANALYZER, perf_analyzer_env


@pytest.fixture(scope="session")
def perf_analyzer() -> str:
    """perf_analyzer's path, or a skip saying why it cannot run here."""
    if not PERF_ANALYZER.exists():
        pytest.skip("perf_analyzer missing: `make triton-client` makes .venv-triton")
    probe = subprocess.run(
        ["ldd", str(PERF_ANALYZER)], capture_output=True, text=True, env=perf_analyzer_env()
    )
    if "not found" in probe.stdout:
        pytest.skip(f"perf_analyzer lacks libraries: {probe.stdout.strip()}")
    return str(PERF_ANALYZER)
