"""The tuned optimizer comparison's plan, checked before Ray starts: a budget that searches,
tuning seeds apart from the evaluation seeds, at least five of those (no Ray here)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.config import ConfigError
from pipeline.tuning import (
    MIN_EVALUATION_SEEDS,
    TPE_STARTUP_TRIALS,
    TuningPlan,
    check_tuning,
    log_grid,
    plan_record,
    prepare_tuning,
    rate_scores,
    seeds_of,
)
from runstore import StoreLocation, SummaryRecord
from tests.pipeline.conftest import tiny_config


def test_the_default_plan_searches_a_log_grid_and_evaluates_on_five_fresh_seeds() -> None:
    plan = TuningPlan()
    check_tuning(plan)
    assert plan.search == "grid" and plan.seeds >= MIN_EVALUATION_SEEDS
    assert plan.rates() == (0.0001, 0.00032, 0.001, 0.0032, 0.01, 0.032, 0.1, 0.32, 1.0)
    base = tiny_config(seed=7).to_dict()
    seeds = seeds_of(base, [], TuningPlan(tuning_seeds=2))
    assert seeds == {"tuning": [7, 8], "evaluation": [9, 10, 11, 12, 13]}
    assert not set(seeds["tuning"]) & set(seeds["evaluation"])
    record = plan_record(base, [], plan, "fair")
    assert record["tuning_seeds"] == [7] and record["evaluation_seeds"] == [8, 9, 10, 11, 12]
    assert record["rates"] == list(plan.rates()) and record["tuned"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"search": "optuna", "trials": 8}, "TPE draws its first 10 trials at random"),
        ({"seeds": 3}, f"at least {MIN_EVALUATION_SEEDS} fresh seeds"),
        ({"trials": 1}, "at least 2 rates"),
        ({"search": "bayes"}, "tuned by grid, random, optuna"),
        ({"lr_low": 1.0, "lr_high": 0.1}, "need 0 < low < high"),
        ({"tuning_seeds": 0}, "need at least 1"),
        ({"optimizers": ("sgd", "sgd")}, "given twice"),
    ],
)
def test_a_plan_that_would_not_compare_fairly_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_tuning(TuningPlan(**changes))  # type: ignore[arg-type]


def test_the_default_rates_run_on_the_evaluation_seeds(tmp_path: Path) -> None:
    base = tiny_config(seed=3).to_dict()
    plan = TuningPlan(optimizers=("sgd", "adam"), trials=2)
    sweeps = prepare_tuning(base, [], plan, StoreLocation.parse(tmp_path), "fair")
    assert sweeps["default"].base_seed == 4 and sweeps["default"].plan.seeds == 5
    assert sweeps["lr-sgd"].base_seed == 3 and sweeps["lr-sgd"].plan.seeds == 1
    assert [a.values for a in sweeps["lr-adam"].plan.axes] == [(0.0001, 1.0)]


def test_optuna_past_its_start_up_trials_is_a_search() -> None:
    check_tuning(TuningPlan(search="optuna", trials=TPE_STARTUP_TRIALS + 1))


def test_log_grid_keeps_its_rates_distinct_and_in_range() -> None:
    assert log_grid(1e-3, 0.3, 2) == (0.001, 0.3)
    fine = log_grid(0.01, 0.011, 5)
    assert len(set(fine)) == 5 and fine[0] == 0.01 and fine[-1] == 0.011
    assert list(fine) == sorted(fine)


def test_the_tuned_rate_has_the_best_mean_over_the_tuning_seeds() -> None:
    def trial(lr: float, state: str, acc: float | None) -> SimpleNamespace:
        summary = SummaryRecord(status=state, val_accuracy=acc)
        return SimpleNamespace(grid={"optimizer.lr": lr}, state=state, summary=summary)

    runs = [
        trial(0.1, "completed", 0.99),
        trial(0.1, "failed", None),  # diverged on the second seed: scores 0
        trial(0.01, "completed", 0.9),
        trial(0.01, "completed", 0.92),
    ]
    scores = rate_scores(runs)  # type: ignore[arg-type]
    assert scores == {0.1: pytest.approx(0.495), 0.01: pytest.approx(0.91)}
