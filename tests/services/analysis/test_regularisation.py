"""Dropout vs weight decay: the weight norm over epochs and the generalisation gap, on a
synthetic store whose answers are known by construction; through the domain, the
servicer, `stride compare` and the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from runstore import RunStore
from services.analysis.compare import Groups, Selection, compare, select
from services.analysis.plots import recorded_panels, render_png
from services.analysis.series import EpochSeries, epoch_series
from services.analysis.servicer import AnalysisServicer
from services.generated.stride.analysis.v1 import analysis_pb2 as pb
from stride.cli import main
from tests.services.analysis.conftest import FakeContext
from tests.services.analysis.pngs import png_size
from tests.services.analysis.runstore import epoch_line, run_config, summary, write_run

# (regulariser, seed) -> weight norm per epoch (None: not recorded) and the last
# epoch's (train, val) accuracy.
#   dropout: norms grow to 14, 18 -> final mean 16; gaps -0.05, -0.03 -> mean -0.04
#   decay:   norms shrink to 8, 6  -> final mean 7;  gaps 0.10, 0.12  -> mean 0.11
#   plain:   no weight_norm at all;  gaps 0.20, 0.20  -> mean 0.20
NORMS: dict[tuple[str, int], list[float | None]] = {
    ("dropout", 1): [10.0, 12.0, 14.0],
    ("dropout", 2): [12.0, 14.0, 18.0],
    ("decay", 1): [10.0, 9.0, 8.0],
    ("decay", 2): [10.0, 8.0, 6.0],
    ("plain", 1): [None, None, None],
    ("plain", 2): [None, None, None],
}
FINAL_ACCURACY = {
    ("dropout", 1): (0.80, 0.85),
    ("dropout", 2): (0.82, 0.85),
    ("decay", 1): (0.95, 0.85),
    ("decay", 2): (0.97, 0.85),
    ("plain", 1): (1.00, 0.80),
    ("plain", 2): (1.00, 0.80),
}
TEST_ACCURACY = {"dropout": 0.84, "decay": 0.83, "plain": 0.78}


def write_regularisation_store(root: Path, experiment: str = "reg") -> Path:
    for (name, seed), norms in NORMS.items():
        train, val = FINAL_ACCURACY[name, seed]
        epochs = []
        for i, norm in enumerate(norms, start=1):
            extra: dict[str, Any] = {} if norm is None else {"weight_norm": norm}
            if i == len(norms):
                extra["train_accuracy"] = train
            epochs.append(epoch_line(i, val if i == len(norms) else 0.5, **extra))
        write_run(
            root,
            experiment,
            f"{name}-s{seed}",
            config=run_config("sgd", seed) | {"regulariser": name},
            epochs=epochs,
            summary=summary(TEST_ACCURACY[name], len(norms)),
        )
    return root


@pytest.fixture
def reg_store(tmp_path: Path) -> Path:
    return write_regularisation_store(tmp_path / "runs")


def _groups(root: Path) -> Groups:
    return select(RunStore(str(root)), Selection("reg", group_by="regulariser"))


def test_epoch_series_over_runs_of_different_lengths(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        "e",
        "long",
        config=run_config("adam", 1),
        epochs=[epoch_line(i, 0.5, weight_norm=w) for i, w in ((1, 1.0), (2, 3.0), (3, 5.0))],
    )
    write_run(
        tmp_path,
        "e",
        "short",
        config=run_config("adam", 2),
        epochs=[epoch_line(1, 0.5, weight_norm=3.0), epoch_line(2, 0.5)],  # epoch 2: none
    )
    runs = select(RunStore(str(tmp_path)), Selection("e", include_unfinished=True)).runs["adam"]
    s = epoch_series(runs, "weight_norm")
    assert s.epochs == (1, 2, 3)
    assert s.mean == (2.0, 3.0, 5.0) and s.low == (1.0, 3.0, 5.0) and s.high == (3.0, 3.0, 5.0)
    assert s.std[0] == pytest.approx(math.sqrt(2.0)) and math.isnan(s.std[1])
    assert epoch_series(runs, "images_per_second").mean == (1000.0, 1000.0, 1000.0)
    short = epoch_series([r for r in runs if r.run_id == "short"], "weight_norm")
    assert short.epochs == (1, 2) and short.mean[0] == 3.0 and math.isnan(short.mean[1])
    assert epoch_series([], "weight_norm") == EpochSeries()


def test_weight_norm_and_gap_per_group(reg_store: Path) -> None:
    c = compare(_groups(reg_store), rank_by="accuracy_gap")
    assert c.ranking == ("dropout", "decay", "plain")  # smallest gap first
    by = {g.name: g for g in c.groups}
    assert by["dropout"].accuracy_gap.mean == pytest.approx(-0.04)
    assert by["decay"].accuracy_gap.mean == pytest.approx(0.11)
    assert by["plain"].accuracy_gap.mean == pytest.approx(0.20)
    assert by["dropout"].test_accuracy.mean == pytest.approx(0.84)
    assert [r.final_weight_norm for r in by["decay"].runs] == [8.0, 6.0]
    assert by["dropout"].final_weight_norm.mean == pytest.approx(16.0)
    assert by["decay"].final_weight_norm.mean == pytest.approx(7.0)
    assert by["plain"].final_weight_norm.n == 0 and by["plain"].final_weight_norm.mean is None
    decay = by["decay"].weight_norm
    assert decay.epochs == (1, 2, 3) and decay.mean == pytest.approx((10.0, 8.5, 7.0))
    assert decay.low == (10.0, 8.0, 6.0) and decay.high == (10.0, 9.0, 8.0)
    assert decay.std == pytest.approx((0.0, math.sqrt(0.5), math.sqrt(2.0)))
    assert by["plain"].weight_norm == EpochSeries()
    p = {(w.a, w.b): w for w in c.pairwise}
    assert p["dropout", "decay"].probability == 1.0 and p["dropout", "decay"].paired


def test_rank_by_final_weight_norm_puts_unrecorded_last(reg_store: Path) -> None:
    c = compare(_groups(reg_store), rank_by="final_weight_norm")
    assert c.ranking == ("decay", "dropout", "plain")
    # every loss gap is -0.05 (the helper's train loss): a tie, ordered by name
    tied = compare(_groups(reg_store), rank_by="loss_gap")
    assert tied.ranking == ("decay", "dropout", "plain")


def test_compare_runs_answers_the_weight_norm(reg_store: Path, context: FakeContext) -> None:
    servicer = AnalysisServicer(RunStore(str(reg_store)))
    selection = pb.RunSelection(experiment="reg", group_by="regulariser")
    request = pb.CompareRunsRequest(selection=selection, rank_by="final_weight_norm")
    out = servicer.CompareRuns(request, context)
    assert list(out.ranking) == ["decay", "dropout", "plain"]
    decay, dropout, plain = out.groups
    assert decay.final_weight_norm.mean == pytest.approx(7.0)
    assert [r.final_weight_norm for r in decay.runs] == [8.0, 6.0]
    assert list(dropout.weight_norm.mean) == pytest.approx([11.0, 13.0, 16.0])
    assert list(dropout.weight_norm.high) == [12.0, 14.0, 18.0]
    assert list(dropout.weight_norm.epochs) == [1, 2, 3]
    assert not plain.HasField("final_weight_norm") or plain.final_weight_norm.n == 0
    assert not plain.weight_norm.epochs and not plain.runs[0].HasField("final_weight_norm")
    assert dropout.accuracy_gap.mean == pytest.approx(-0.04)
    run = servicer.GetRun(pb.GetRunRequest(experiment="reg", run_id="decay-s2"), context)
    assert [e.weight_norm for e in run.history] == [10.0, 8.0, 6.0]
    wins = servicer.WinMatrix(
        pb.WinMatrixRequest(selection=selection, metric="accuracy_gap"), context
    )
    cells = {(c.a, c.b): c.probability for c in wins.cells}
    assert cells["dropout", "plain"] == 1.0 and cells["plain", "decay"] == 0.0


def test_compare_table_json_and_plot(
    reg_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["compare", "reg", "--runs", str(reg_store), "--by", "regulariser"]
    assert main([*base, "--rank-by", "final_weight_norm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("rank"))
    assert "acc gap (train - val)" in header and header.endswith("final weight norm")
    assert lines[lines.index(header) + 2].startswith("1     decay")
    decay = lines[lines.index(header) + 2]
    assert "0.110 ±0.014" in decay and decay.endswith("7.000 ±1.414")
    assert lines[lines.index(header) + 4].rstrip().endswith("-")  # plain: not recorded
    plot = tmp_path / "reg.png"
    args = [*base, "--json", "--rank-by", "accuracy_gap", "--plot", str(plot)]
    assert main([*args, "--width", "600", "--height", "600"]) == 0
    data = json.loads(capsys.readouterr().out)["comparison"]
    assert data["rank_by"] == "accuracy_gap" and data["ranking"][0] == "dropout"
    dropout = data["groups"][0]
    assert dropout["final_weight_norm"]["mean"] == pytest.approx(16.0)
    assert dropout["weight_norm"]["low"] == [10.0, 12.0, 14.0]
    assert dropout["accuracy_gap"]["mean"] == pytest.approx(-0.04)
    assert dropout["runs"][1]["final_weight_norm"] == 18.0
    assert data["groups"][2]["weight_norm"]["mean"] == []
    assert png_size(plot.read_bytes()) == (600, 600)


def test_weight_norm_table_column_only_when_recorded(
    known_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "opt", "--runs", str(known_store)]) == 0
    assert "weight norm" not in capsys.readouterr().out


def test_the_weight_norm_panel_is_drawn_when_recorded(reg_store: Path, known_store: Path) -> None:
    groups = _groups(reg_store)
    assert len(recorded_panels(groups)) == 1
    assert recorded_panels(select(RunStore(str(known_store)), Selection("opt"))) == []
    png = render_png(groups, (), width=500, height=500)
    assert png_size(png) == (500, 500)
