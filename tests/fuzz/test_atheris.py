"""Bounded atheris runs of every harness (a few seconds each, in a subprocess).

A crash, a hang (libFuzzer's per-input timeout), a memory blow-up or an early exit
of the harness fails the test with libFuzzer's report; `make fuzz` runs the same
harnesses for longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.run import TARGETS, run_target

pytest.importorskip("atheris")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RUNS = 16  # inputs per harness: a count, not a time, so a busy machine cannot fail it
SECONDS = 120  # only a cap; a harness that needs it is stuck


@pytest.mark.parametrize("target", TARGETS)
def test_harness_runs_clean(target: str, tmp_path: Path) -> None:
    result = run_target(target, SECONDS, tmp_path, runs=RUNS)
    assert result.ok, f"{target}: {result.finding}\nartifacts: {result.artifacts}"
    assert result.runs >= RUNS, f"{target} ran only {result.runs} of {RUNS} inputs"
