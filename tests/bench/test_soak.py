"""The soak, scaled down: two 10 s windows at concurrency 64, the model swapped between them.

The behaviour `make soak` checks (zero failed requests, every window run, version 2
served and version 1 removed under load, RSS growth under 10% between the first and the
last window), on two windows of 10 s instead of minutes. The p99 trend is left to
`make soak`, which prints it: a latency trend over seconds of a shared machine is noise.
"""

from __future__ import annotations

import pytest

from bench.soak import check, report, soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_soak_with_a_model_swap_passes(perf_analyzer: str) -> None:
    result = soak(minutes=1 / 3, window_s=10, concurrency=64)
    failed = check(result, latency=False)
    assert not failed, report(result) + "\n" + "\n".join(failed)
    assert result["server_successes"] > 0 and result["server_exit"] == 0


def test_check_fails_each_criterion() -> None:
    # The checks must be able to fail: a result that breaks each one is caught.
    good = {
        "perf_analyzer_errors": [],
        "server_failures": 0,
        "windows": [{"pass": 1, "throughput": 1.0, "p99_us": 100}] * 3,
        "passes_expected": 3,
        "swap": {"version_1_removed_s": 1.0},
        "memory_growth": 0.05,
        "p99_growth": 0.1,
    }
    assert check(good) == []
    changes: list[dict[str, object]] = [
        {"server_failures": 1},
        {"perf_analyzer_errors": ["Thread [0] had error: unknown model"]},
        {"passes_expected": 4},
        {"swap": {}},
        {"memory_growth": 0.11},
        {"p99_growth": 0.25},
    ]
    for change in changes:
        assert len(check({**good, **change})) == 1, change
    assert check({**good, "p99_growth": 0.25}, latency=False) == []
