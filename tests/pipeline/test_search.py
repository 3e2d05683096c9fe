"""The search a sweep runs, parsed and refused before Ray starts (no Ray here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.search import (
    Axis,
    SweepPlan,
    build_plan,
    check_scheduler,
    parse_grid,
    parse_space,
    read_sweep_file,
)
from pipeline.tune import trial_config, trial_label, trial_resources, trial_run_id
from tests.pipeline.conftest import tiny_config


def test_distributions_and_grids_are_parsed() -> None:
    lr, width, act, drop = parse_space(
        [
            "optimizer.lr=loguniform(1e-4, 1e-1)",
            "model.head.hidden.0=randint(8,33)",
            "model.activation=choice(relu,tanh)",
            "model.head.dropout=uniform(0,0.5)",
        ]
    )
    assert (lr.kind, lr.low, lr.high) == ("loguniform", 1e-4, 1e-1)
    assert width.corners() == [8, 32]  # randint excludes its high end
    assert act.values == ("relu", "tanh") and drop.corners() == [0.0, 0.5]
    (grid,) = parse_grid(["optimizer.lr=1e-3,0.1"])
    assert grid.values == (1e-3, 0.1)  # YAML 1.1 would leave 1e-3 a string


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: parse_space(["optimizer.lr=loguniform(0.1,0.01)"]), "needs low < high"),
        (lambda: parse_space(["optimizer.lr=uniform(1,1)"]), "needs low < high"),
        (lambda: parse_space(["optimizer.lr=loguniform(0,1)"]), "low > 0"),
        (lambda: parse_space(["optimizer.lr=normal(0,1)"]), "expected one of"),
        (lambda: parse_space(["optimizer.lr=uniform(a,1)"]), "not a finite number"),
        (lambda: parse_space(["model.head.hidden.0=randint(1.5,3)"]), "integers"),
        (lambda: parse_space(["optimizer.lr=choice(1)"]), "at least two"),
        (lambda: parse_grid(["optimizer.name"]), "expected key=v1,v2"),
        (lambda: build_plan([], search="hyperband"), "unknown searcher 'hyperband'"),
        (lambda: build_plan([], scheduler="pbt"), "unknown scheduler 'pbt'; allowed: none, asha"),
        (lambda: build_plan([], scheduler="asha", metric="test_accuracy"), "reported every"),
        (lambda: build_plan([], seeds=-1), "--seeds must be an integer >= 1"),
        (lambda: build_plan([], samples=0), "--samples must be an integer >= 1"),
        (lambda: build_plan([], grace_epochs=0), "--grace-epochs"),
        (
            lambda: build_plan(parse_grid(["optimizer.name=sgd,adam"]), search="optuna"),
            "optuna cannot take the grid axis optimizer.name=sgd,adam",
        ),
        (
            lambda: build_plan(parse_space(["optimizer.lr=loguniform(1e-4,1)"])),
            "--search grid cannot sample",
        ),
        (lambda: build_plan([], search="random", samples=3), "needs at least one --space"),
        (lambda: build_plan(parse_grid(["seed=1,2"])), "use --seeds"),
        (
            lambda: build_plan(parse_grid(["optimizer.lr=0.1", "optimizer.lr=0.2"])),
            "given twice",
        ),
    ],
)
def test_bad_searches_are_refused(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]


def test_asha_needs_epochs_past_its_grace() -> None:
    plan = build_plan([], scheduler="asha", grace_epochs=2)
    check_scheduler(plan, 3)
    with pytest.raises(ConfigError, match="leaves ASHA nothing to stop in 2-epoch runs"):
        check_scheduler(plan, 2)


def test_trial_counts() -> None:
    lr = parse_space(["optimizer.lr=loguniform(1e-4,1)"])
    names = parse_grid(["optimizer.name=sgd,adam"])
    assert build_plan(names, seeds=3).trials == 6
    assert build_plan(lr, search="optuna", samples=4, seeds=2).trials == 8
    assert build_plan([*names, *lr], search="random", samples=3).trials == 6
    plan = build_plan(lr, search="optuna", samples=4)
    assert SweepPlan.from_dict(plan.to_dict()) == plan  # sweep.json round trip


def test_a_sweep_file_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "grid: {optimizer.name: [sgd, adam]}\n"
        "space: {optimizer.lr: 'loguniform(1e-3, 1e-1)'}\n"
        "search: random\nsamples: 2\n"
    )
    settings = read_sweep_file(path)
    assert [a.key for a in settings["axes"]] == ["optimizer.name", "optimizer.lr"]
    assert settings["search"] == "random" and settings["samples"] == 2
    path.write_text("grid: {optimizer.name: [sgd]}\nsearcher: random\n")
    with pytest.raises(ConfigError, match="unknown key 'searcher'"):
        read_sweep_file(path)


def test_a_trial_is_its_values_seed_and_trial_id() -> None:
    base = tiny_config().to_dict()
    values = {"optimizer": {"name": "sgd", "lr": 0.0123}, "training.epochs": 2}
    cfg = trial_config(base, values, 7)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.training.epochs, cfg.seed) == (
        "sgd",
        0.0123,
        2,
        7,
    )
    assert cfg.optimizer.weight_decay == tiny_config().optimizer.weight_decay  # kept
    assert trial_label(values) == "sgd-0.0123_2"
    assert trial_run_id(values, 7, "ab12c_00003") == "sgd-0.0123_2-s7-ab12c_00003"


def test_trial_resources_on_two_cpus() -> None:
    """A single-worker trial reserves its CPUs where it trains; a multi-worker trial only
    drives its TorchTrainer and reserves no CPU, so its two 1-CPU workers fit on 2 CPUs."""
    job = {"config": tiny_config().to_dict(), "base_seed": 0}
    one = trial_resources(job, {"axes": {}, "seed": 0})
    assert one.bundles == [{"CPU": 1.0}]
    two = trial_resources(job, {"axes": {"scaling.workers": 2}, "seed": 0})
    assert two.required_resources.get("CPU", 0) == 0
    gpu = trial_resources(
        job, {"axes": {"scaling.use_gpu": True, "scaling.gpus_per_worker": 0.25}, "seed": 0}
    )
    assert gpu.bundles == [{"CPU": 1.0, "GPU": 0.25}]


def test_axis_description() -> None:
    assert Axis("a.b", "loguniform", low=1e-4, high=0.1).describe() == "a.b=loguniform(0.0001,0.1)"
