"""`stride course`: the plan's configs, the convolution example, the claim tables on a
run store whose answers are known, and the reduced course through Ray."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.conv_example import convolve_by_definition, format_markdown, worked_example
from runstore import ConfigRecord, EpochRecord, RunDir, StoreLocation, SummaryRecord
from stride.commands import _course_tables as tables
from stride.commands import course


def test_convolution_flips_the_kernel_and_conv2d_cross_correlates() -> None:
    ex = worked_example()
    assert ex.flip_matches and ex.unflipped_differs
    # y[0, 0] = x[0, 0] w[0, 0]; y[1, 1] = 5*1 + 4*2 + 2*3 + 1*4 (hand-computed)
    assert ex.by_definition[0][0] == 1 and ex.by_definition[1][1] == 23
    # the 1-D textbook case as a 1x1 kernel: convolution is scaling
    assert convolve_by_definition(((1.0, 2.0), (3.0, 4.0)), ((2.0,),)) == ((2, 4), (6, 8))
    assert "Conv2d holding W^r equals the definition: yes" in format_markdown(ex)


@pytest.mark.parametrize("exp", course.PLAN, ids=lambda e: e.name)
def test_every_sweep_of_the_plan_loads(exp: course.Experiment) -> None:
    """Each committed config with each grid value and override is a valid run config."""
    assert exp.table in {"vanishing", "epochs_to_target", "dead_units", "cost", "regularisation"}
    for sweep in exp.sweeps:
        path = course.CONFIGS / sweep.config
        for axis in sweep.grid or ("seed=1",):
            key, _, values = axis.partition("=")
            for value in values.split(","):
                load_config(path, [*sweep.sets, f"{key}={value}"])


def _write_run(store: Path, experiment: str, run_id: str, config: dict, epochs: list[dict]) -> None:
    run = RunDir.create(StoreLocation.parse(store), experiment, run_id)
    layers = (
        {"name": "features.0.conv", "kind": "conv", "params": 100},
        {"name": "features.0.bn", "kind": "batch_norm", "params": 16},
        {"name": "features.0.act", "kind": "activation", "params": 0},
        {"name": "head.fc", "kind": "linear", "params": 50},
    )
    run.write_config(ConfigRecord(experiment, run_id, "now", config, layers=layers))
    for i, e in enumerate(epochs, start=1):
        run.append_metrics(EpochRecord(epoch=i, **e))
    run.write_summary(SummaryRecord(status="completed", test_accuracy=0.5))


def _epoch(acc: float, first: float, dead: float, speed: float = 100.0) -> dict:
    return {
        "train_accuracy": acc + 0.1,
        "val_accuracy": acc,
        "train_loss": 0.1,
        "val_loss": 0.3,
        "grad_norms": (("features.0.conv", first), ("features.0.bn", 5.0), ("head.fc", 1.0)),
        "dead_units": (("features.0.act", dead),),
        "weight_norm": 10.0 * acc,
        "images_per_second": speed,
    }


def test_claim_tables_on_a_store_with_known_answers(tmp_path: Path) -> None:
    for seed, a_epochs in ((1, 2), (2, 3)):
        for act, reach in (("sigmoid", a_epochs), ("tanh", 1)):
            accs = [0.95 if e >= reach else 0.5 for e in (1, 2, 3)]
            epochs = [_epoch(a, 1e-3 if act == "sigmoid" else 0.1, 0.25) for a in accs]
            cfg = {"seed": seed, "model": {"activation": {"name": act}}}
            _write_run(tmp_path, "exp", f"{act}-{seed}", cfg, epochs)
    store = StoreLocation.parse(tmp_path)
    t = tables.write_table("epochs_to_target", store, ["exp"], "model.activation.name", 0.9)
    assert t.numbers["activation=sigmoid"]["epochs_to_target"] == [2, 3]
    assert t.numbers["activation=tanh"]["epochs_to_target"] == [1, 1]
    assert t.numbers["paired"] == {
        "faster": "activation=tanh",
        "probability": 1.0,
        "pairs": 2,
        "paired_by_seed": True,
    }
    # the analysis library's numbers, not a second definition: its t interval
    stat = t.numbers["activation=sigmoid"]["epochs_to_target_stat"]
    assert stat["interval"] == "student_t" and stat["mean"] == 2.5
    assert "95% Student's t interval of the mean" in t.markdown
    v = tables.write_table("vanishing", store, ["exp", "absent"], "model.activation.name", 0.9)
    sig = v.numbers["activation=sigmoid"]
    # weight layers only (batch norm left out), averaged over epochs and seeds
    assert list(sig["grad_norm_by_weight_layer"]) == ["features.0.conv", "head.fc"]
    assert sig["log10_first_over_last"] == pytest.approx(-3.0)
    d = tables.write_table("dead_units", store, ["exp"], "model.activation.name", 0.9)
    assert d.numbers["activation=tanh"]["dead_last_epoch"] == {"features.0.act": 0.25}
    c = tables.write_table("cost", store, ["exp"], "model.activation.name", 0.9)
    assert c.numbers["activation=tanh"]["params"] == 166
    r = tables.write_table("regularisation", store, ["exp"], "model.activation.name", 0.9)
    assert r.numbers["activation=tanh"]["accuracy_gap"] == pytest.approx([0.1, 0.1])
    assert math.isclose(r.numbers["activation=tanh"]["weight_norm_last"][0], 9.5)
    assert "| activation=sigmoid | 2 |" in t.markdown
    empty = tables.write_table("cost", store, ["nothing"], "model.name", 0.9)
    assert empty.markdown.startswith("(no runs")


def test_claim_tables_count_diverged_runs_and_say_what_was_left_out(tmp_path: Path) -> None:
    for seed in (1, 2):
        epochs = [_epoch(0.9, 0.1, 0.5), _epoch(0.95, 0.1, 0.5)]
        _write_run(tmp_path, "exp", f"relu-{seed}", {"seed": seed, "act": "relu"}, epochs)
    diverged = RunDir.create(StoreLocation.parse(tmp_path), "exp", "relu-3")
    diverged.write_config(ConfigRecord("exp", "relu-3", "now", {"seed": 3, "act": "relu"}))
    reason = "FloatingPointError: epoch 1: validation loss is nan; the run diverged"
    diverged.write_summary(SummaryRecord(status="failed", failure="diverged", reason=reason))
    crashed = RunDir.create(StoreLocation.parse(tmp_path), "exp", "relu-4")
    crashed.write_config(ConfigRecord("exp", "relu-4", "now", {"seed": 4, "act": "relu"}))
    crashed.append_metrics(EpochRecord(epoch=1, **_epoch(0.2, 0.1, 0.5)))
    crashed.write_summary(
        SummaryRecord(status="failed", failure="error", reason="RuntimeError: worker lost")
    )
    d = tables.write_table("dead_units", StoreLocation.parse(tmp_path), ["exp"], "act", 0.9)
    assert "| act=relu | 3 (1 diverged) |" in d.markdown
    # no class count in this config.json: the diverged run scores the worst accuracy, 0
    assert d.numbers["act=relu"]["final_val_accuracy"] == [0.95, 0.95, 0.0]
    assert "left out: 1 run (1 failed outside the training): relu-4" in d.markdown
    assert d.numbers["left_out"][0]["run_id"] == "relu-4"


def test_the_course_exits_1_and_says_which_step_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stride.commands._paths import store_location

    args = argparse.Namespace(
        runs=store_location(str(tmp_path / "runs")),
        out=tmp_path / "out",
        img=tmp_path / "img",
        seeds=3,
        only=["tanh-sigmoid"],
        quick=False,
        tables_only=True,  # nothing to compare in an empty store: the comparison fails
        subprocess=False,
        address=None,
    )
    assert course.run(args) == 1
    err = capsys.readouterr().err
    assert "course: failed: stride compare tanh-sigmoid (exit 1)" in err
    assert "course: 1 failed step; the tables of their claims are incomplete" in err


def test_summary_paths_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert course._shown(str(tmp_path / "runs" / "course")) == os.path.join("runs", "course")
    assert course._shown(str(tmp_path)) == "."
    outside = str(tmp_path.parent / "elsewhere")
    assert course._shown(outside) == outside  # outside the working directory: kept absolute
    assert course._shown("s3://bucket/runs?region=x") == "s3://bucket/runs?region=x"
    assert course._shown("--seeds") == "--seeds" and course._shown("runs") == "runs"


def test_unknown_experiment_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown experiment; valid: vanishing"):
        course._selected(["nope"])


@pytest.mark.ray
@pytest.mark.slow
def test_quick_course_runs_sweeps_compare_and_writes_tables(
    tmp_path: Path, ray_cluster: dict[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reduced course: one sweep (2 runs of 1 epoch) through `stride sweep`, its
    comparison and figure, the tables and summary.json. The run store is given relative,
    as its default is; the sweep gets it resolved, the summary shows it as given."""
    from stride.commands._paths import store_location

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        runs=store_location("runs"),
        out=tmp_path / "out",
        img=tmp_path / "img",
        seeds=3,
        only=[],
        quick=True,
        tables_only=False,
        subprocess=False,
        address=None,
    )
    assert course.run(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mode"] == "quick" and summary["seeds"] == 1
    (exp,) = summary["experiments"]
    assert exp["name"] == "dying-relu" and exp["sweeps"][0]["rc"] == 0
    assert summary["runs"] == "runs" and str(tmp_path) not in json.dumps(summary)
    assert list((tmp_path / "runs").rglob("summary.json"))  # the runs landed where asked
    groups = {"activation=relu lr=0.05", "activation=leaky_relu lr=0.05"}
    assert set(exp["numbers"]) == {*groups, "left_out"} and exp["numbers"]["left_out"] == []
    assert (tmp_path / "out" / "dying-relu.md").read_text().startswith("| group |")
    assert summary["convolution"]["flip_matches_definition"] is True
    assert (tmp_path / "img" / "course-dying-relu.png").stat().st_size > 1000
