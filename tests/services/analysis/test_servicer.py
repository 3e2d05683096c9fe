"""The AnalysisService servicer in-process: each RPC on the known store."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from runstore import MalformedRun as MalformedRunError
from runstore import RunNotFound, RunStore
from services.analysis.errors import InvalidRequest
from services.analysis.servicer import AnalysisServicer
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from tests.services.analysis.conftest import FakeContext
from tests.services.analysis.pngs import png_size
from tests.services.analysis.runstore import (
    LAYERS,
    epoch_line,
    run_config,
    run_id,
    summary,
    write_run,
)


@pytest.fixture
def servicer(known_store: Path) -> AnalysisServicer:
    write_run(
        known_store,
        "opt",
        "adam-running",
        config=run_config("adam", 4),
        epochs=[epoch_line(1, 0.5)],
    )
    write_run(
        known_store,
        "opt",
        "adam-failed",
        config=run_config("adam", 5),
        epochs=[epoch_line(1, 0.5)],
        summary=summary(None, 1, status="failed", reason="loss is NaN"),
    )
    (known_store / "opt" / "broken").mkdir()
    (known_store / "opt" / "broken" / "config.json").write_text("{")
    return AnalysisServicer(RunStore(str(known_store)))


def test_list_experiments_counts_runs_by_status(
    servicer: AnalysisServicer, context: FakeContext
) -> None:
    out = servicer.ListExperiments(pb.ListExperimentsRequest(), context)
    [exp] = out.experiments
    assert (exp.name, exp.runs, exp.completed, exp.failed, exp.running, exp.malformed) == (
        "opt",
        8,
        6,
        1,
        1,
        1,
    )


def test_list_runs_filters_and_reports_malformed(
    servicer: AnalysisServicer, context: FakeContext
) -> None:
    out = servicer.ListRuns(
        pb.ListRunsRequest(experiment="opt", statuses=["completed"], where=["seed=3"]), context
    )
    assert sorted(r.run_id for r in out.runs) == [run_id("adam", 3), run_id("sgd", 3)]
    info = {r.run_id: r for r in out.runs}[run_id("sgd", 3)]
    assert (info.seed, info.epochs, info.status) == (3, 3, "completed")
    assert info.final_val_accuracy == pytest.approx(0.94)
    assert info.grid == {"optimizer.name": "sgd"}
    assert [(m.run_id, m.reason.split(" (")[0]) for m in out.malformed] == [
        ("broken", "malformed: config.json is not valid JSON")
    ]
    running = servicer.ListRuns(pb.ListRunsRequest(experiment="opt", statuses=["running"]), context)
    assert [r.run_id for r in running.runs] == ["adam-running"]
    assert not running.runs[0].HasField("test_accuracy")


def test_get_run_has_config_history_and_summary(
    servicer: AnalysisServicer, context: FakeContext
) -> None:
    out = servicer.GetRun(pb.GetRunRequest(experiment="opt", run_id=run_id("adam", 1)), context)
    assert json.loads(out.config_json)["config"]["optimizer"]["name"] == "adam"
    assert [e.val_accuracy for e in out.history] == pytest.approx([0.5, 0.96, 0.97])
    assert [g.layer for g in out.history[0].grad_norms] == list(LAYERS)
    assert out.summary.test_accuracy == pytest.approx(0.97)
    running = servicer.GetRun(pb.GetRunRequest(experiment="opt", run_id="adam-running"), context)
    assert running.run.status == "running" and not running.HasField("summary")
    with pytest.raises(RunNotFound):
        servicer.GetRun(pb.GetRunRequest(experiment="opt", run_id="nope"), context)
    with pytest.raises(MalformedRunError, match="broken"):
        servicer.GetRun(pb.GetRunRequest(experiment="opt", run_id="broken"), context)
    with pytest.raises(InvalidRequest, match="run_id is required"):
        servicer.GetRun(pb.GetRunRequest(experiment="opt"), context)


def test_compare_runs(servicer: AnalysisServicer, context: FakeContext) -> None:
    request = pb.CompareRunsRequest(selection=pb.RunSelection(experiment="opt"))
    out = servicer.CompareRuns(request, context)
    assert (out.group_by, out.target, out.rank_by, out.auc_epochs) == (
        "optimizer.name",
        pytest.approx(0.95),
        "epochs_to_target",
        3,
    )
    assert list(out.ranking) == ["adam", "sgd"]
    adam, sgd = out.groups
    assert (adam.epochs_to_target.mean, adam.epochs_to_target.std) == (2.0, 1.0)
    assert (sgd.reached_target, len(sgd.runs)) == (1, 3)
    assert [r.reached_target for r in sgd.runs] == [False, True, False]
    assert adam.final_val_accuracy.HasField("ci_low")
    assert adam.final_val_accuracy.interval == out.interval == "student_t"
    assert out.confidence == pytest.approx(0.95)
    pair = {(p.a, p.b): p for p in out.pairwise}["adam", "sgd"]
    assert pair.paired_by_seed and pair.pairs == 3
    assert pair.probability == pytest.approx(2.5 / 3)
    assert {s.run_id for s in out.skipped} == {"adam-running", "adam-failed", "broken"}
    with pytest.raises(InvalidRequest, match="bootstrap_samples and bootstrap_seed are no longer"):
        servicer.CompareRuns(
            pb.CompareRunsRequest(selection=request.selection, bootstrap_samples=500), context
        )


def test_compare_explicit_groups_and_options(
    servicer: AnalysisServicer, context: FakeContext
) -> None:
    selection = pb.RunSelection(
        experiment="opt",
        groups=[
            pb.RunGroup(name="a", run_ids=[run_id("adam", 1), run_id("adam", 2)]),
            pb.RunGroup(name="s", run_ids=[run_id("sgd", 1)]),
        ],
    )
    out = servicer.CompareRuns(
        pb.CompareRunsRequest(selection=selection, target=0.5, rank_by="test_accuracy"), context
    )
    assert out.group_by == "run ids" and out.target == 0.5 and list(out.ranking) == ["a", "s"]
    with pytest.raises(InvalidRequest, match="rank_by 'fast' unknown"):
        servicer.CompareRuns(pb.CompareRunsRequest(selection=selection, rank_by="fast"), context)
    with pytest.raises(InvalidRequest, match="experiment is required"):
        servicer.CompareRuns(pb.CompareRunsRequest(), context)


def test_gradient_flow(servicer: AnalysisServicer, context: FakeContext) -> None:
    out = servicer.GradientFlow(
        pb.GradientFlowRequest(selection=pb.RunSelection(experiment="opt")), context
    )
    adam = out.groups[0]
    assert [layer.layer for layer in adam.layers] == [
        "features.0.conv",
        "features.1.conv",
        "head.fc",
    ]
    assert list(adam.epochs) == [1, 2, 3]
    assert adam.ratio == pytest.approx(0.01) and adam.log10_ratio == pytest.approx(-2)
    assert list(adam.layers[2].mean) == pytest.approx([1.0, 1.0, 1.0])


def test_render_comparison_is_a_png_of_the_asked_size(
    servicer: AnalysisServicer, context: FakeContext
) -> None:
    out = servicer.RenderComparison(
        pb.RenderComparisonRequest(
            selection=pb.RunSelection(experiment="opt"), width=640, height=480
        ),
        context,
    )
    assert out.content_type == "image/png"
    assert png_size(out.png) == (640, 480) == (out.width, out.height)
    with pytest.raises(InvalidRequest, match="width 10 px"):
        servicer.RenderComparison(
            pb.RenderComparisonRequest(selection=pb.RunSelection(experiment="opt"), width=10),
            context,
        )


def _writer(folder: Path, curve: list[float], delay: float) -> threading.Thread:
    def write() -> None:
        with open(folder / "metrics.jsonl", "a") as f:
            for i, acc in enumerate(curve, start=2):
                time.sleep(delay)
                line = json.dumps(epoch_line(i, acc)) + "\n"
                # two writes, to show that a half-written line is never sent
                f.write(line[:25])
                f.flush()
                time.sleep(delay / 2)
                f.write(line[25:])
                f.flush()
        time.sleep(delay)
        (folder / "summary.json").write_text(json.dumps(summary(0.9, len(curve) + 1)))

    return threading.Thread(target=write, daemon=True)


def test_watch_run_follows_a_run_being_written(known_store: Path) -> None:
    folder = write_run(
        known_store, "live", "r1", config=run_config("adam", 1), epochs=[epoch_line(1, 0.5)]
    )
    servicer = AnalysisServicer(RunStore(str(known_store)))
    writer = _writer(folder, [0.6, 0.7, 0.8], delay=0.06)
    writer.start()
    stream = servicer.WatchRun(
        pb.WatchRunRequest(experiment="live", run_id="r1", poll_seconds=0.01), FakeContext(10)
    )
    events = list(stream)
    writer.join()
    assert [e.epoch.epoch for e in events[:-1]] == [1, 2, 3, 4]
    assert [e.epoch.val_accuracy for e in events[:-1]] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert events[-1].WhichOneof("event") == "summary"
    assert events[-1].summary.status == "completed"


def test_watch_run_after_epoch_and_finished_run(known_store: Path, context: FakeContext) -> None:
    servicer = AnalysisServicer(RunStore(str(known_store)))
    request = pb.WatchRunRequest(experiment="opt", run_id=run_id("adam", 1), after_epoch=2)
    events = list(servicer.WatchRun(request, context))
    assert [e.WhichOneof("event") for e in events] == ["epoch", "summary"]
    assert events[0].epoch.epoch == 3


def test_watch_run_ends_at_the_deadline_and_on_cancel(known_store: Path) -> None:
    write_run(
        known_store, "live", "stalled", config=run_config("adam", 1), epochs=[epoch_line(1, 0.5)]
    )
    servicer = AnalysisServicer(RunStore(str(known_store)))
    request = pb.WatchRunRequest(experiment="live", run_id="stalled", poll_seconds=0.05)
    start = time.monotonic()
    events = list(servicer.WatchRun(request, FakeContext(timeout=0.4)))
    assert 0.3 < time.monotonic() - start < 5.0
    assert [e.epoch.epoch for e in events] == [1]
    context = FakeContext()
    threading.Timer(0.2, context.cancel).start()
    start = time.monotonic()
    assert len(list(servicer.WatchRun(request, context))) == 1
    assert time.monotonic() - start < 5.0
    with pytest.raises(RunNotFound):
        list(servicer.WatchRun(pb.WatchRunRequest(experiment="live", run_id="x"), context))


def test_get_run_pages_a_long_history(servicer: AnalysisServicer, context: FakeContext) -> None:
    # A 200 MB metrics.jsonl could never be fetched whole: the history comes in pages.
    whole = servicer.GetRun(pb.GetRunRequest(experiment="opt", run_id=run_id("adam", 1)), context)
    assert whole.total_epochs == len(whole.history) == 3
    page = servicer.GetRun(
        pb.GetRunRequest(
            experiment="opt",
            run_id=run_id("adam", 1),
            first_epoch=2,
            last_epoch=3,
            without_grad_norms=True,
        ),
        context,
    )
    assert [e.epoch for e in page.history] == [2, 3] and page.total_epochs == 3
    assert all(not e.grad_norms for e in page.history) and whole.history[1].grad_norms
    with pytest.raises(InvalidRequest, match="first_epoch <= last_epoch"):
        servicer.GetRun(
            pb.GetRunRequest(
                experiment="opt", run_id=run_id("adam", 1), first_epoch=3, last_epoch=2
            ),
            context,
        )
