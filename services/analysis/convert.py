"""Domain records to protobuf messages and requests to domain options, nothing else."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from typing import Any

from runstore import EpochRecord, Run, Skipped, SummaryRecord, format_value
from services.analysis import compare as cmp
from services.analysis.errors import InvalidRequest
from services.analysis.series import EpochSeries
from services.analysis.stats import Stat, WinProbability
from services.generated.stride.analysis.v1 import analysis_pb2 as pb


def _set(message: Any, **values: Any) -> None:
    """Set the fields whose value is not None (optional fields stay absent)."""
    for name, value in values.items():
        if value is not None:
            setattr(message, name, value)


def selection(request: pb.RunSelection) -> cmp.Selection:
    """A RunSelection message as the domain's Selection."""
    if not request.experiment:
        raise InvalidRequest("selection.experiment is required")
    groups: dict[str, list[str]] = {}
    for group in request.groups:
        if not group.name or group.name in groups:
            raise InvalidRequest(f"group name {group.name!r} is empty or given twice")
        groups[group.name] = list(group.run_ids)
    return cmp.Selection(
        experiment=request.experiment,
        group_by=request.group_by or cmp.DEFAULT_GROUP_BY,
        groups=groups,
        where=tuple(request.where),
        include_unfinished=request.include_unfinished,
    )


def no_bootstrap(request: pb.CompareRunsRequest | pb.ExpectedBestRequest) -> None:
    """Refuse the bootstrap fields a request may still set: the intervals are Student's
    t and the expected best has none, so a bootstrap asked for would be silently not
    given."""
    if request.bootstrap_samples or request.bootstrap_seed:
        raise InvalidRequest(
            "bootstrap_samples and bootstrap_seed are no longer used: a comparison's "
            "intervals are Student's t, and the expected best has no interval "
            "(docs/analysis.md); leave them unset"
        )


def stat(value: Stat) -> pb.Stat:
    """A Stat message."""
    out = pb.Stat(n=value.n, interval=value.interval or "")
    _set(out, mean=value.mean, std=value.std, ci_low=value.ci_low, ci_high=value.ci_high)
    return out


def epoch_series(value: EpochSeries) -> pb.EpochSeries:
    """An EpochSeries message."""
    return pb.EpochSeries(
        epochs=list(value.epochs),
        mean=list(value.mean),
        std=list(value.std),
        low=list(value.low),
        high=list(value.high),
    )


def skipped(value: Skipped) -> pb.SkippedRun:
    """A SkippedRun message."""
    return pb.SkippedRun(experiment=value.experiment, run_id=value.run_id, reason=value.reason)


def epoch(value: EpochRecord) -> pb.EpochMetrics:
    """An EpochMetrics message."""
    out = pb.EpochMetrics(
        epoch=value.epoch,
        grad_norms=[pb.LayerNorm(layer=layer, norm=norm) for layer, norm in value.grad_norms],
    )
    _set(
        out,
        train_loss=value.train_loss,
        train_accuracy=value.train_accuracy,
        val_loss=value.val_loss,
        val_accuracy=value.val_accuracy,
        lr=value.lr,
        epoch_seconds=value.epoch_seconds,
        elapsed_seconds=value.elapsed_seconds,
        images_per_second=value.images_per_second,
        weight_norm=value.weight_norm,
    )
    return out


def summary(value: SummaryRecord) -> pb.RunSummary:
    """A RunSummary message."""
    out = pb.RunSummary(
        status=value.status,
        reason=value.reason or "",
        best_metric=value.best_metric or "",
        stopped_early=value.stopped_early,
        device=value.device or "",
        finished_at=value.finished_at or "",
    )
    _set(
        out,
        test_loss=value.test_loss,
        test_accuracy=value.test_accuracy,
        best_epoch=value.best_epoch,
        best_value=value.best_value,
        epochs_run=value.epochs_run,
        wall_seconds=value.wall_seconds,
    )
    return out


def run_info(run: Run) -> pb.RunInfo:
    """A RunInfo message: identity, status and headline numbers of a run."""
    accuracies = [e.val_accuracy for e in run.epochs if e.val_accuracy is not None]
    out = pb.RunInfo(
        experiment=run.experiment,
        run_id=run.run_id,
        status=run.status,
        grid={str(k): format_value(v) for k, v in run.grid.items()},
        epochs=len(run.epochs),
        reason=(run.summary.reason or "") if run.summary else "",
        warnings=list(run.warnings),
    )
    _set(
        out,
        seed=run.seed,
        final_val_accuracy=run.epochs[-1].val_accuracy if run.epochs else None,
        best_val_accuracy=max(accuracies) if accuracies else None,
        test_accuracy=run.summary.test_accuracy if run.summary else None,
    )
    return out


MAX_EPOCHS_PER_CALL = 10_000  # GetRun's page: a long run is fetched in several calls


def get_run(
    run: Run, *, first_epoch: int = 0, last_epoch: int = 0, grad_norms: bool = True
) -> pb.GetRunResponse:
    """The run: config.json as JSON text, the epochs first..last (0: all), the summary."""
    if first_epoch < 0 or last_epoch < 0 or (last_epoch and last_epoch < first_epoch):
        raise InvalidRequest(
            f"epochs {first_epoch}..{last_epoch}: give 1-based first_epoch <= last_epoch, "
            "or 0 for the first / the last"
        )
    first = max(first_epoch, 1)
    last = last_epoch or len(run.epochs)
    page = run.epochs[first - 1 : last]
    if len(page) > MAX_EPOCHS_PER_CALL:
        raise InvalidRequest(
            f"run {run.run_id!r} has {len(run.epochs)} epochs; one GetRun returns at most "
            f"{MAX_EPOCHS_PER_CALL:,}: ask for pages with first_epoch and last_epoch"
        )
    out = pb.GetRunResponse(
        run=run_info(run),
        config_json=json.dumps(asdict(run.record) if run.record else {}, sort_keys=True),
        history=[epoch(e if grad_norms else replace(e, grad_norms=())) for e in page],
        total_epochs=len(run.epochs),
    )
    if run.summary is not None:
        out.summary.CopyFrom(summary(run.summary))
    return out


def _run_result(value: cmp.RunResult) -> pb.RunResult:
    out = pb.RunResult(
        run_id=value.run_id,
        status=value.status,
        epochs=value.epochs,
        reached_target=value.reached_target,
        epochs_to_target=value.epochs_to_target,
        outcome=value.outcome,
        budget_epochs=value.budget_epochs,
    )
    _set(
        out,
        seed=value.seed,
        final_val_accuracy=value.final_val_accuracy,
        best_val_accuracy=value.best_val_accuracy,
        test_accuracy=value.test_accuracy,
        seconds_to_target=value.seconds_to_target,
        auc_val_loss=value.auc_val_loss,
        wall_seconds=value.wall_seconds,
        images_per_second=value.images_per_second,
        accuracy_gap=value.accuracy_gap,
        loss_gap=value.loss_gap,
        final_weight_norm=value.final_weight_norm,
        parameters=value.parameters,
    )
    return out


def _group(value: cmp.GroupStats) -> pb.GroupStats:
    return pb.GroupStats(
        name=value.name,
        runs=[_run_result(r) for r in value.runs],
        final_val_accuracy=stat(value.final_val_accuracy),
        best_val_accuracy=stat(value.best_val_accuracy),
        test_accuracy=stat(value.test_accuracy),
        epochs_to_target=stat(value.epochs_to_target),
        seconds_to_target=stat(value.seconds_to_target),
        reached_target=value.reached_target,
        auc_val_loss=stat(value.auc_val_loss),
        wall_seconds=stat(value.wall_seconds),
        images_per_second=stat(value.images_per_second),
        epochs=stat(value.epochs),
        accuracy_gap=stat(value.accuracy_gap),
        loss_gap=stat(value.loss_gap),
        final_weight_norm=stat(value.final_weight_norm),
        weight_norm=epoch_series(value.weight_norm),
        diverged=value.diverged,
        stopped=value.stopped,
    )


def _pair(value: WinProbability) -> pb.PairwiseWin:
    out = pb.PairwiseWin(a=value.a, b=value.b, pairs=value.pairs, paired_by_seed=value.paired)
    _set(out, probability=value.probability)
    return out


def comparison(value: cmp.Comparison) -> pb.CompareRunsResponse:
    """A CompareRunsResponse."""
    return pb.CompareRunsResponse(
        experiment=value.experiment,
        group_by=value.group_by,
        target=value.target,
        rank_by=value.rank_by,
        auc_epochs=value.auc_epochs,
        groups=[_group(g) for g in value.groups],
        ranking=list(value.ranking),
        pairwise=[_pair(p) for p in value.pairwise],
        skipped=[skipped(s) for s in value.skipped],
        interval=value.interval,
        confidence=value.confidence,
    )


def gradient_flow(
    flows: tuple[cmp.GroupFlow, ...], left_out: tuple[Skipped, ...]
) -> pb.GradientFlowResponse:
    """A GradientFlowResponse."""
    groups = [
        pb.GroupGradientFlow(
            name=f.name,
            runs=f.runs,
            epochs=list(f.epochs),
            layers=[
                pb.LayerSeries(
                    layer=layer.layer,
                    mean=list(layer.mean),
                    std=list(layer.std),
                    kind=layer.kind,
                    depth=layer.depth,
                )
                for layer in f.layers
            ],
            ratio_by_epoch=list(f.ratio_by_epoch),
            ratio=f.ratio,
            log10_ratio=math.log10(f.ratio) if f.ratio > 0 else math.nan,
            first_layer=f.first_layer,
            last_layer=f.last_layer,
        )
        for f in flows
    ]
    return pb.GradientFlowResponse(groups=groups, skipped=[skipped(s) for s in left_out])
