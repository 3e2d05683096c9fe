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
}
DEFAULT_RANK_BY = "epochs_to_target"
