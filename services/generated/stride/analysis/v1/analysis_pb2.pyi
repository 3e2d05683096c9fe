from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListExperimentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExperimentInfo(_message.Message):
    __slots__ = ("name", "runs", "completed", "failed", "running", "malformed", "stopped")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    name: str
    runs: int
    completed: int
    failed: int
    running: int
    malformed: int
    stopped: int
    def __init__(self, name: _Optional[str] = ..., runs: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., running: _Optional[int] = ..., malformed: _Optional[int] = ..., stopped: _Optional[int] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[ExperimentInfo]
    def __init__(self, experiments: _Optional[_Iterable[_Union[ExperimentInfo, _Mapping]]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("experiment", "statuses", "where")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    statuses: _containers.RepeatedScalarFieldContainer[str]
    where: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, experiment: _Optional[str] = ..., statuses: _Optional[_Iterable[str]] = ..., where: _Optional[_Iterable[str]] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("experiment", "run_id", "status", "seed", "grid", "epochs", "final_val_accuracy", "best_val_accuracy", "test_accuracy", "reason", "warnings")
    class GridEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BEST_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    run_id: str
    status: str
    seed: int
    grid: _containers.ScalarMap[str, str]
    epochs: int
    final_val_accuracy: float
    best_val_accuracy: float
    test_accuracy: float
    reason: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, experiment: _Optional[str] = ..., run_id: _Optional[str] = ..., status: _Optional[str] = ..., seed: _Optional[int] = ..., grid: _Optional[_Mapping[str, str]] = ..., epochs: _Optional[int] = ..., final_val_accuracy: _Optional[float] = ..., best_val_accuracy: _Optional[float] = ..., test_accuracy: _Optional[float] = ..., reason: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class SkippedRun(_message.Message):
    __slots__ = ("experiment", "run_id", "reason")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    run_id: str
    reason: str
    def __init__(self, experiment: _Optional[str] = ..., run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "malformed")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    malformed: _containers.RepeatedCompositeFieldContainer[SkippedRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., malformed: _Optional[_Iterable[_Union[SkippedRun, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("experiment", "run_id", "first_epoch", "last_epoch", "without_grad_norms")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_GRAD_NORMS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    run_id: str
    first_epoch: int
    last_epoch: int
    without_grad_norms: bool
    def __init__(self, experiment: _Optional[str] = ..., run_id: _Optional[str] = ..., first_epoch: _Optional[int] = ..., last_epoch: _Optional[int] = ..., without_grad_norms: _Optional[bool] = ...) -> None: ...

class LayerNorm(_message.Message):
    __slots__ = ("layer", "norm")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    NORM_FIELD_NUMBER: _ClassVar[int]
    layer: str
    norm: float
    def __init__(self, layer: _Optional[str] = ..., norm: _Optional[float] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "grad_norms", "epoch_seconds", "elapsed_seconds", "images_per_second", "weight_norm")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORMS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_NORM_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    grad_norms: _containers.RepeatedCompositeFieldContainer[LayerNorm]
    epoch_seconds: float
    elapsed_seconds: float
    images_per_second: float
    weight_norm: float
    def __init__(self, epoch: _Optional[int] = ..., train_loss: _Optional[float] = ..., train_accuracy: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_accuracy: _Optional[float] = ..., lr: _Optional[float] = ..., grad_norms: _Optional[_Iterable[_Union[LayerNorm, _Mapping]]] = ..., epoch_seconds: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ..., images_per_second: _Optional[float] = ..., weight_norm: _Optional[float] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("status", "reason", "test_loss", "test_accuracy", "best_epoch", "best_metric", "best_value", "epochs_run", "stopped_early", "wall_seconds", "device", "finished_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEST_LOSS_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BEST_METRIC_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_RUN_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    status: str
    reason: str
    test_loss: float
    test_accuracy: float
    best_epoch: int
    best_metric: str
    best_value: float
    epochs_run: int
    stopped_early: bool
    wall_seconds: float
    device: str
    finished_at: str
    def __init__(self, status: _Optional[str] = ..., reason: _Optional[str] = ..., test_loss: _Optional[float] = ..., test_accuracy: _Optional[float] = ..., best_epoch: _Optional[int] = ..., best_metric: _Optional[str] = ..., best_value: _Optional[float] = ..., epochs_run: _Optional[int] = ..., stopped_early: _Optional[bool] = ..., wall_seconds: _Optional[float] = ..., device: _Optional[str] = ..., finished_at: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run", "config_json", "history", "summary", "total_epochs")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    run: RunInfo
    config_json: str
    history: _containers.RepeatedCompositeFieldContainer[EpochMetrics]
    summary: RunSummary
    total_epochs: int
    def __init__(self, run: _Optional[_Union[RunInfo, _Mapping]] = ..., config_json: _Optional[str] = ..., history: _Optional[_Iterable[_Union[EpochMetrics, _Mapping]]] = ..., summary: _Optional[_Union[RunSummary, _Mapping]] = ..., total_epochs: _Optional[int] = ...) -> None: ...

class RunSelection(_message.Message):
    __slots__ = ("experiment", "group_by", "groups", "where", "include_unfinished")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNFINISHED_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    group_by: str
    groups: _containers.RepeatedCompositeFieldContainer[RunGroup]
    where: _containers.RepeatedScalarFieldContainer[str]
    include_unfinished: bool
    def __init__(self, experiment: _Optional[str] = ..., group_by: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[RunGroup, _Mapping]]] = ..., where: _Optional[_Iterable[str]] = ..., include_unfinished: _Optional[bool] = ...) -> None: ...

class RunGroup(_message.Message):
    __slots__ = ("name", "run_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Stat(_message.Message):
    __slots__ = ("n", "mean", "std", "ci_low", "ci_high", "interval")
    N_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    interval: str
    def __init__(self, n: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., interval: _Optional[str] = ...) -> None: ...

class RunResult(_message.Message):
    __slots__ = ("run_id", "seed", "status", "epochs", "final_val_accuracy", "best_val_accuracy", "test_accuracy", "reached_target", "epochs_to_target", "seconds_to_target", "auc_val_loss", "wall_seconds", "images_per_second", "accuracy_gap", "loss_gap", "final_weight_norm", "outcome", "budget_epochs", "parameters")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BEST_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    REACHED_TARGET_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_TO_TARGET_FIELD_NUMBER: _ClassVar[int]
    SECONDS_TO_TARGET_FIELD_NUMBER: _ClassVar[int]
    AUC_VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_GAP_FIELD_NUMBER: _ClassVar[int]
    LOSS_GAP_FIELD_NUMBER: _ClassVar[int]
    FINAL_WEIGHT_NORM_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    seed: int
    status: str
    epochs: int
    final_val_accuracy: float
    best_val_accuracy: float
    test_accuracy: float
    reached_target: bool
    epochs_to_target: int
    seconds_to_target: float
    auc_val_loss: float
    wall_seconds: float
    images_per_second: float
    accuracy_gap: float
    loss_gap: float
    final_weight_norm: float
    outcome: str
    budget_epochs: int
    parameters: int
    def __init__(self, run_id: _Optional[str] = ..., seed: _Optional[int] = ..., status: _Optional[str] = ..., epochs: _Optional[int] = ..., final_val_accuracy: _Optional[float] = ..., best_val_accuracy: _Optional[float] = ..., test_accuracy: _Optional[float] = ..., reached_target: _Optional[bool] = ..., epochs_to_target: _Optional[int] = ..., seconds_to_target: _Optional[float] = ..., auc_val_loss: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., images_per_second: _Optional[float] = ..., accuracy_gap: _Optional[float] = ..., loss_gap: _Optional[float] = ..., final_weight_norm: _Optional[float] = ..., outcome: _Optional[str] = ..., budget_epochs: _Optional[int] = ..., parameters: _Optional[int] = ...) -> None: ...

class EpochSeries(_message.Message):
    __slots__ = ("epochs", "mean", "std", "low", "high")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    epochs: _containers.RepeatedScalarFieldContainer[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    low: _containers.RepeatedScalarFieldContainer[float]
    high: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, epochs: _Optional[_Iterable[int]] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., low: _Optional[_Iterable[float]] = ..., high: _Optional[_Iterable[float]] = ...) -> None: ...

class GroupStats(_message.Message):
    __slots__ = ("name", "runs", "final_val_accuracy", "best_val_accuracy", "test_accuracy", "epochs_to_target", "seconds_to_target", "reached_target", "auc_val_loss", "wall_seconds", "images_per_second", "epochs", "accuracy_gap", "loss_gap", "final_weight_norm", "weight_norm", "diverged", "stopped")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BEST_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_TO_TARGET_FIELD_NUMBER: _ClassVar[int]
    SECONDS_TO_TARGET_FIELD_NUMBER: _ClassVar[int]
    REACHED_TARGET_FIELD_NUMBER: _ClassVar[int]
    AUC_VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_GAP_FIELD_NUMBER: _ClassVar[int]
    LOSS_GAP_FIELD_NUMBER: _ClassVar[int]
    FINAL_WEIGHT_NORM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_NORM_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    name: str
    runs: _containers.RepeatedCompositeFieldContainer[RunResult]
    final_val_accuracy: Stat
    best_val_accuracy: Stat
    test_accuracy: Stat
    epochs_to_target: Stat
    seconds_to_target: Stat
    reached_target: int
    auc_val_loss: Stat
    wall_seconds: Stat
    images_per_second: Stat
    epochs: Stat
    accuracy_gap: Stat
    loss_gap: Stat
    final_weight_norm: Stat
    weight_norm: EpochSeries
    diverged: int
    stopped: int
    def __init__(self, name: _Optional[str] = ..., runs: _Optional[_Iterable[_Union[RunResult, _Mapping]]] = ..., final_val_accuracy: _Optional[_Union[Stat, _Mapping]] = ..., best_val_accuracy: _Optional[_Union[Stat, _Mapping]] = ..., test_accuracy: _Optional[_Union[Stat, _Mapping]] = ..., epochs_to_target: _Optional[_Union[Stat, _Mapping]] = ..., seconds_to_target: _Optional[_Union[Stat, _Mapping]] = ..., reached_target: _Optional[int] = ..., auc_val_loss: _Optional[_Union[Stat, _Mapping]] = ..., wall_seconds: _Optional[_Union[Stat, _Mapping]] = ..., images_per_second: _Optional[_Union[Stat, _Mapping]] = ..., epochs: _Optional[_Union[Stat, _Mapping]] = ..., accuracy_gap: _Optional[_Union[Stat, _Mapping]] = ..., loss_gap: _Optional[_Union[Stat, _Mapping]] = ..., final_weight_norm: _Optional[_Union[Stat, _Mapping]] = ..., weight_norm: _Optional[_Union[EpochSeries, _Mapping]] = ..., diverged: _Optional[int] = ..., stopped: _Optional[int] = ...) -> None: ...

class PairwiseWin(_message.Message):
    __slots__ = ("a", "b", "probability", "pairs", "paired_by_seed")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    PAIRED_BY_SEED_FIELD_NUMBER: _ClassVar[int]
    a: str
    b: str
    probability: float
    pairs: int
    paired_by_seed: bool
    def __init__(self, a: _Optional[str] = ..., b: _Optional[str] = ..., probability: _Optional[float] = ..., pairs: _Optional[int] = ..., paired_by_seed: _Optional[bool] = ...) -> None: ...

class CompareRunsRequest(_message.Message):
    __slots__ = ("selection", "target", "rank_by", "bootstrap_seed", "bootstrap_samples")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RANK_BY_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_SEED_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    selection: RunSelection
    target: float
    rank_by: str
    bootstrap_seed: int
    bootstrap_samples: int
    def __init__(self, selection: _Optional[_Union[RunSelection, _Mapping]] = ..., target: _Optional[float] = ..., rank_by: _Optional[str] = ..., bootstrap_seed: _Optional[int] = ..., bootstrap_samples: _Optional[int] = ...) -> None: ...

class CompareRunsResponse(_message.Message):
    __slots__ = ("experiment", "group_by", "target", "rank_by", "auc_epochs", "bootstrap_seed", "bootstrap_samples", "groups", "ranking", "pairwise", "skipped", "interval", "confidence")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RANK_BY_FIELD_NUMBER: _ClassVar[int]
    AUC_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_SEED_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    group_by: str
    target: float
    rank_by: str
    auc_epochs: int
    bootstrap_seed: int
    bootstrap_samples: int
    groups: _containers.RepeatedCompositeFieldContainer[GroupStats]
    ranking: _containers.RepeatedScalarFieldContainer[str]
    pairwise: _containers.RepeatedCompositeFieldContainer[PairwiseWin]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRun]
    interval: str
    confidence: float
    def __init__(self, experiment: _Optional[str] = ..., group_by: _Optional[str] = ..., target: _Optional[float] = ..., rank_by: _Optional[str] = ..., auc_epochs: _Optional[int] = ..., bootstrap_seed: _Optional[int] = ..., bootstrap_samples: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[GroupStats, _Mapping]]] = ..., ranking: _Optional[_Iterable[str]] = ..., pairwise: _Optional[_Iterable[_Union[PairwiseWin, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedRun, _Mapping]]] = ..., interval: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class GradientFlowRequest(_message.Message):
    __slots__ = ("selection",)
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    selection: RunSelection
    def __init__(self, selection: _Optional[_Union[RunSelection, _Mapping]] = ...) -> None: ...

class LayerSeries(_message.Message):
    __slots__ = ("layer", "mean", "std", "kind", "depth")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    layer: str
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    kind: str
    depth: int
    def __init__(self, layer: _Optional[str] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., kind: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class GroupGradientFlow(_message.Message):
    __slots__ = ("name", "runs", "epochs", "layers", "ratio_by_epoch", "ratio", "log10_ratio", "first_layer", "last_layer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    RATIO_BY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    LOG10_RATIO_FIELD_NUMBER: _ClassVar[int]
    FIRST_LAYER_FIELD_NUMBER: _ClassVar[int]
    LAST_LAYER_FIELD_NUMBER: _ClassVar[int]
    name: str
    runs: int
    epochs: _containers.RepeatedScalarFieldContainer[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerSeries]
    ratio_by_epoch: _containers.RepeatedScalarFieldContainer[float]
    ratio: float
    log10_ratio: float
    first_layer: str
    last_layer: str
    def __init__(self, name: _Optional[str] = ..., runs: _Optional[int] = ..., epochs: _Optional[_Iterable[int]] = ..., layers: _Optional[_Iterable[_Union[LayerSeries, _Mapping]]] = ..., ratio_by_epoch: _Optional[_Iterable[float]] = ..., ratio: _Optional[float] = ..., log10_ratio: _Optional[float] = ..., first_layer: _Optional[str] = ..., last_layer: _Optional[str] = ...) -> None: ...

class GradientFlowResponse(_message.Message):
    __slots__ = ("groups", "skipped")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupGradientFlow]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRun]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupGradientFlow, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedRun, _Mapping]]] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("experiment", "run_id", "after_epoch", "poll_seconds")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    POLL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    run_id: str
    after_epoch: int
    poll_seconds: float
    def __init__(self, experiment: _Optional[str] = ..., run_id: _Optional[str] = ..., after_epoch: _Optional[int] = ..., poll_seconds: _Optional[float] = ...) -> None: ...

class WatchRunResponse(_message.Message):
    __slots__ = ("epoch", "summary", "warnings")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    epoch: EpochMetrics
    summary: RunSummary
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, epoch: _Optional[_Union[EpochMetrics, _Mapping]] = ..., summary: _Optional[_Union[RunSummary, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class RenderComparisonRequest(_message.Message):
    __slots__ = ("selection", "width", "height", "dpi", "profile", "sensitivity", "expected_best", "win_matrix")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DPI_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_BEST_FIELD_NUMBER: _ClassVar[int]
    WIN_MATRIX_FIELD_NUMBER: _ClassVar[int]
    selection: RunSelection
    width: int
    height: int
    dpi: int
    profile: PerformanceProfileRequest
    sensitivity: LearningRateSensitivityRequest
    expected_best: ExpectedBestRequest
    win_matrix: WinMatrixRequest
    def __init__(self, selection: _Optional[_Union[RunSelection, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., dpi: _Optional[int] = ..., profile: _Optional[_Union[PerformanceProfileRequest, _Mapping]] = ..., sensitivity: _Optional[_Union[LearningRateSensitivityRequest, _Mapping]] = ..., expected_best: _Optional[_Union[ExpectedBestRequest, _Mapping]] = ..., win_matrix: _Optional[_Union[WinMatrixRequest, _Mapping]] = ...) -> None: ...

class RenderComparisonResponse(_message.Message):
    __slots__ = ("png", "width", "height", "content_type")
    PNG_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    width: int
    height: int
    content_type: str
    def __init__(self, png: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., content_type: _Optional[str] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("experiment", "target")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    target: float
    def __init__(self, experiment: _Optional[str] = ..., target: _Optional[float] = ...) -> None: ...

class PerformanceProfileRequest(_message.Message):
    __slots__ = ("workloads", "group_by", "where", "include_unfinished", "metric", "target", "time", "tau_max", "points")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNFINISHED_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TAU_MAX_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[Workload]
    group_by: str
    where: _containers.RepeatedScalarFieldContainer[str]
    include_unfinished: bool
    metric: str
    target: float
    time: str
    tau_max: float
    points: int
    def __init__(self, workloads: _Optional[_Iterable[_Union[Workload, _Mapping]]] = ..., group_by: _Optional[str] = ..., where: _Optional[_Iterable[str]] = ..., include_unfinished: _Optional[bool] = ..., metric: _Optional[str] = ..., target: _Optional[float] = ..., time: _Optional[str] = ..., tau_max: _Optional[float] = ..., points: _Optional[int] = ...) -> None: ...

class GroupTime(_message.Message):
    __slots__ = ("group", "runs", "reached", "time", "ratio")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    REACHED_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    group: str
    runs: int
    reached: int
    time: float
    ratio: float
    def __init__(self, group: _Optional[str] = ..., runs: _Optional[int] = ..., reached: _Optional[int] = ..., time: _Optional[float] = ..., ratio: _Optional[float] = ...) -> None: ...

class WorkloadResult(_message.Message):
    __slots__ = ("experiment", "target", "best_group", "groups")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BEST_GROUP_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    target: float
    best_group: str
    groups: _containers.RepeatedCompositeFieldContainer[GroupTime]
    def __init__(self, experiment: _Optional[str] = ..., target: _Optional[float] = ..., best_group: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[GroupTime, _Mapping]]] = ...) -> None: ...

class ProfileCurve(_message.Message):
    __slots__ = ("group", "rho", "log_tau_area", "score")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    LOG_TAU_AREA_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    group: str
    rho: _containers.RepeatedScalarFieldContainer[float]
    log_tau_area: float
    score: float
    def __init__(self, group: _Optional[str] = ..., rho: _Optional[_Iterable[float]] = ..., log_tau_area: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class PerformanceProfileResponse(_message.Message):
    __slots__ = ("group_by", "metric", "time", "tau_max", "tau", "groups", "workloads", "skipped")
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TAU_MAX_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    group_by: str
    metric: str
    time: str
    tau_max: float
    tau: _containers.RepeatedScalarFieldContainer[float]
    groups: _containers.RepeatedCompositeFieldContainer[ProfileCurve]
    workloads: _containers.RepeatedCompositeFieldContainer[WorkloadResult]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRun]
    def __init__(self, group_by: _Optional[str] = ..., metric: _Optional[str] = ..., time: _Optional[str] = ..., tau_max: _Optional[float] = ..., tau: _Optional[_Iterable[float]] = ..., groups: _Optional[_Iterable[_Union[ProfileCurve, _Mapping]]] = ..., workloads: _Optional[_Iterable[_Union[WorkloadResult, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedRun, _Mapping]]] = ...) -> None: ...

class LearningRateSensitivityRequest(_message.Message):
    __slots__ = ("selection", "metric", "lr_key")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LR_KEY_FIELD_NUMBER: _ClassVar[int]
    selection: RunSelection
    metric: str
    lr_key: str
    def __init__(self, selection: _Optional[_Union[RunSelection, _Mapping]] = ..., metric: _Optional[str] = ..., lr_key: _Optional[str] = ...) -> None: ...

class SensitivityPoint(_message.Message):
    __slots__ = ("lr", "n", "mean", "std", "low", "high", "run_ids", "diverged")
    LR_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_FIELD_NUMBER: _ClassVar[int]
    lr: float
    n: int
    mean: float
    std: float
    low: float
    high: float
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    diverged: int
    def __init__(self, lr: _Optional[float] = ..., n: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., run_ids: _Optional[_Iterable[str]] = ..., diverged: _Optional[int] = ...) -> None: ...

class SensitivityCurve(_message.Message):
    __slots__ = ("name", "points", "best_lr", "best_mean")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BEST_LR_FIELD_NUMBER: _ClassVar[int]
    BEST_MEAN_FIELD_NUMBER: _ClassVar[int]
    name: str
    points: _containers.RepeatedCompositeFieldContainer[SensitivityPoint]
    best_lr: float
    best_mean: float
    def __init__(self, name: _Optional[str] = ..., points: _Optional[_Iterable[_Union[SensitivityPoint, _Mapping]]] = ..., best_lr: _Optional[float] = ..., best_mean: _Optional[float] = ...) -> None: ...

class LearningRateSensitivityResponse(_message.Message):
    __slots__ = ("experiment", "group_by", "metric", "lr_key", "groups", "skipped")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LR_KEY_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    group_by: str
    metric: str
    lr_key: str
    groups: _containers.RepeatedCompositeFieldContainer[SensitivityCurve]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRun]
    def __init__(self, experiment: _Optional[str] = ..., group_by: _Optional[str] = ..., metric: _Optional[str] = ..., lr_key: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[SensitivityCurve, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedRun, _Mapping]]] = ...) -> None: ...

class ExpectedBestRequest(_message.Message):
    __slots__ = ("selection", "metric", "k", "bootstrap_seed", "bootstrap_samples")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_SEED_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    selection: RunSelection
    metric: str
    k: int
    bootstrap_seed: int
    bootstrap_samples: int
    def __init__(self, selection: _Optional[_Union[RunSelection, _Mapping]] = ..., metric: _Optional[str] = ..., k: _Optional[int] = ..., bootstrap_seed: _Optional[int] = ..., bootstrap_samples: _Optional[int] = ...) -> None: ...

class ExpectedBestCurve(_message.Message):
    __slots__ = ("name", "trials", "k", "mean", "ci_low", "ci_high", "diverged")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_FIELD_NUMBER: _ClassVar[int]
    name: str
    trials: int
    k: _containers.RepeatedScalarFieldContainer[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    ci_low: _containers.RepeatedScalarFieldContainer[float]
    ci_high: _containers.RepeatedScalarFieldContainer[float]
    diverged: int
    def __init__(self, name: _Optional[str] = ..., trials: _Optional[int] = ..., k: _Optional[_Iterable[int]] = ..., mean: _Optional[_Iterable[float]] = ..., ci_low: _Optional[_Iterable[float]] = ..., ci_high: _Optional[_Iterable[float]] = ..., diverged: _Optional[int] = ...) -> None: ...

class ExpectedBestResponse(_message.Message):
    __slots__ = ("experiment", "group_by", "metric", "bootstrap_seed", "bootstrap_samples", "groups", "skipped")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_SEED_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    group_by: str
    metric: str
    bootstrap_seed: int
    bootstrap_samples: int
    groups: _containers.RepeatedCompositeFieldContainer[ExpectedBestCurve]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRun]
    def __init__(self, experiment: _Optional[str] = ..., group_by: _Optional[str] = ..., metric: _Optional[str] = ..., bootstrap_seed: _Optional[int] = ..., bootstrap_samples: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[ExpectedBestCurve, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedRun, _Mapping]]] = ...) -> None: ...

class WinMatrixRequest(_message.Message):
    __slots__ = ("selection", "metric", "target")
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    selection: RunSelection
    metric: str
    target: float
    def __init__(self, selection: _Optional[_Union[RunSelection, _Mapping]] = ..., metric: _Optional[str] = ..., target: _Optional[float] = ...) -> None: ...

class WinMatrixResponse(_message.Message):
    __slots__ = ("experiment", "group_by", "metric", "target", "groups", "cells", "pairing", "skipped")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    PAIRING_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    group_by: str
    metric: str
    target: float
    groups: _containers.RepeatedScalarFieldContainer[str]
    cells: _containers.RepeatedCompositeFieldContainer[PairwiseWin]
    pairing: str
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRun]
    def __init__(self, experiment: _Optional[str] = ..., group_by: _Optional[str] = ..., metric: _Optional[str] = ..., target: _Optional[float] = ..., groups: _Optional[_Iterable[str]] = ..., cells: _Optional[_Iterable[_Union[PairwiseWin, _Mapping]]] = ..., pairing: _Optional[str] = ..., skipped: _Optional[_Iterable[_Union[SkippedRun, _Mapping]]] = ...) -> None: ...

class DeadUnitsRequest(_message.Message):
    __slots__ = ("selection",)
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    selection: RunSelection
    def __init__(self, selection: _Optional[_Union[RunSelection, _Mapping]] = ...) -> None: ...

class GroupDeadUnits(_message.Message):
    __slots__ = ("name", "runs", "epochs", "layers", "mean_by_epoch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MEAN_BY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    runs: int
    epochs: _containers.RepeatedScalarFieldContainer[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerSeries]
    mean_by_epoch: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., runs: _Optional[int] = ..., epochs: _Optional[_Iterable[int]] = ..., layers: _Optional[_Iterable[_Union[LayerSeries, _Mapping]]] = ..., mean_by_epoch: _Optional[_Iterable[float]] = ...) -> None: ...

class DeadUnitsResponse(_message.Message):
    __slots__ = ("groups", "skipped")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupDeadUnits]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedRun]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupDeadUnits, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedRun, _Mapping]]] = ...) -> None: ...
