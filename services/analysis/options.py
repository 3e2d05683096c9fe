"""The comparison's option names and defaults, apart from the code that computes it, so
that `stride --help` can show them without importing numpy or grpc."""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_GROUP_BY = "optimizer.name"
DEFAULT_TARGET = 0.95
# metric -> lower is better. Time metrics count a run that missed the target as its budget.
RANK_METRICS: Mapping[str, bool] = {
    "epochs_to_target": True,
    "seconds_to_target": True,
    "final_val_accuracy": False,
    "best_val_accuracy": False,
    "test_accuracy": False,
    "auc_val_loss": True,
    "accuracy_gap": True,  # the generalisation gap: train - val accuracy at the last epoch
    "loss_gap": True,  # val - train loss at the last epoch
    # Lower first, which is not a verdict: a smaller norm is the regularisers' effect
    # (weight decay, dropout), not better by itself.
    "final_weight_norm": True,
}
DEFAULT_RANK_BY = "epochs_to_target"

# Performance profiles (PerformanceProfile, `stride compare --profile`).
# metric -> lower is better: val_accuracy reaches its target at or above it, val_loss at
# or below it.
PROFILE_METRICS: Mapping[str, bool] = {"val_accuracy": False, "val_loss": True}
DEFAULT_PROFILE_METRIC = "val_accuracy"
PROFILE_TIMES = ("epochs", "seconds")  # epochs: robust on a shared, loaded machine
DEFAULT_PROFILE_TIME = "epochs"
DEFAULT_TAU_MAX = 4.0  # AlgoPerf's upper bound of the performance ratio
DEFAULT_TAU_POINTS = 100
MAX_TAU_POINTS = 10_000
MAX_WORKLOADS = 64  # experiments in one profile

# Learning-rate sensitivity (LearningRateSensitivity, `stride compare --sensitivity`).
DEFAULT_LR_KEY = "optimizer.lr"  # null there: config.json's effective.lr
SENSITIVITY_METRICS: Mapping[str, bool] = {
    "final_val_accuracy": False,
    "best_val_accuracy": False,
    "test_accuracy": False,
    "final_val_loss": True,
}
DEFAULT_SENSITIVITY_METRIC = "final_val_accuracy"

# Expected best validation metric after k trials (ExpectedBest, `--expected-best`).
EXPECTED_BEST_METRICS = ("best_val_accuracy", "final_val_accuracy", "test_accuracy")
DEFAULT_EXPECTED_BEST_METRIC = "best_val_accuracy"
