from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import (
    ActivationSpec,
    ConfigError,
    ConvSpec,
    PoolSpec,
    RunConfig,
    apply_override,
    load_config,
    parse_config,
)
from pipeline.optim import OPTIMIZERS, build_optimizer
from pipeline.search import build_plan, parse_grid
from pipeline.spec import validate
from pipeline.sweep import prepare

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_parse_to_frozen_dataclasses() -> None:
    cfg = parse_config({})
    assert isinstance(cfg, RunConfig)
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["digits.yaml", "reference_cnn.yaml"])
def test_shipped_configs_load_and_validate(name: str) -> None:
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.model.blocks


def test_blocks_parse_by_type_and_activation_shorthand() -> None:
    cfg = parse_config(
        {
            "model": {
                "activation": "elu",
                "blocks": [
                    {
                        "type": "conv",
                        "channels": 4,
                        "activation": {"name": "leaky_relu", "negative_slope": 0.2},
                    },
                    {"type": "pool", "kind": "mean"},
                ],
            }
        }
    )
    conv, pool = cfg.model.blocks
    assert isinstance(conv, ConvSpec) and isinstance(pool, PoolSpec)
    assert conv.activation == ActivationSpec(name="leaky_relu", negative_slope=0.2)
    assert cfg.model.activation.name == "elu"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"optimzer": {}}, "unknown key 'optimzer'; allowed: seed, data, model"),
        ({"training": {"epochs": "ten"}}, "training.epochs: expected an integer, got 'ten'"),
        ({"training": {"epochs": True}}, "training.epochs: expected an integer"),
        ({"early_stopping": {"metric": "val_f1"}}, "allowed: val_loss, val_accuracy"),
        ({"model": {"blocks": [{"type": "lstm"}]}}, "allowed: conv, pool, dropout"),
        ({"model": {"blocks": [{"type": "conv"}]}}, "model.blocks[0].channels: required"),
        ({"model": {"blocks": [{"type": "pool", "kind": "median"}]}}, "allowed: max, mean"),
        ({"optimizer": {"lr": float("nan")}}, "finite number"),
        ({"data": {"image_size": [8]}}, "data.image_size: expected 2 values"),
        (
            {"model": {"blocks": [{"type": "conv", "channels": 4, "padding": 1.5}]}},
            "is not a string or an integer",
        ),
    ],
)
def test_bad_values_name_key_and_allowed(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(data)
    assert message in str(info.value)


def test_overrides_go_through_the_same_parser() -> None:
    cfg = parse_config(
        {"model": {"blocks": [{"type": "conv", "channels": 4}]}},
        [
            "optimizer.name=sgd",
            "optimizer.lr=0.1",
            "model.blocks.0.channels=16",
            "data.augment.rotation=5",
            "model.head.hidden=[32, 16]",
        ],
    )
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 0.1
    assert cfg.model.blocks[0].channels == 16  # type: ignore[union-attr]
    assert cfg.data.augment.rotation == 5.0
    assert cfg.model.head.hidden == (32, 16)
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        parse_config({}, ["data.colour=red"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_config({}, ["optimizer.name"])
    with pytest.raises(ConfigError, match=r"index must be 0\.\.0"):
        parse_config(
            {"model": {"blocks": [{"type": "conv", "channels": 4}]}}, ["model.blocks.3.channels=1"]
        )


def test_override_values_are_yaml() -> None:
    data: dict = {}
    apply_override(data, "a.b=true")
    apply_override(data, "a.c=0.5")
    apply_override(data, "a.d=adam")
    assert data == {"a": {"b": True, "c": 0.5, "d": "adam"}}


def test_registry_names_checked_on_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optimizer: {name: adamm}\n")
    with pytest.raises(ValueError, match=r"optimizer.name: unknown optimizer 'adamm'; valid: sgd"):
        load_config(path)
    path.write_text("loss: {name: hinge}\n")
    with pytest.raises(ValueError, match="valid: cross_entropy, binary_cross_entropy, mse, mae"):
        load_config(path)
    path.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.epochs=0", "training.epochs: 0 is not allowed"),
        ("optimizer.lr=-1", "optimizer.lr: -1.0 is not allowed"),
        ("scaling.workers=0", "scaling.workers"),
        ("data.val_fraction=0.8", "data.val_fraction + test_fraction"),
        # explicit zeros the data sets would replace by their defaults (`channels or 3`)
        ("data.channels=0", "data.channels: 0 is not allowed"),
        ("data.num_classes=0", "data.num_classes: 0 is not allowed; must be >= 2"),
        ("data.image_size=[0, 8]", "data.image_size: (0, 8) is not allowed"),
    ],
)
def test_ranges_checked_on_load(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "configs" / "digits.yaml", [override])


def test_hash_is_stable_and_sensitive() -> None:
    a, b = parse_config({}), parse_config({})
    assert a.hash() == b.hash()
    assert parse_config({}, ["seed=1"]).hash() != a.hash()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer.name=adam", "optimizer.momentum=0.9"],
            "optimizer.momentum: 0.9 is not allowed; adam takes no momentum",
        ),
        (
            ["optimizer.name=sgd", "optimizer.betas=[0.9, 0.99]"],
            "optimizer.betas: (0.9, 0.99) is not allowed; sgd takes no betas",
        ),
        (["optimizer.name=adagrad", "optimizer.momentum=0.5"], "adagrad takes no momentum"),
        (["optimizer.name=momentum", "optimizer.eps=1.0e-8"], "momentum takes no eps"),
        (["optimizer.eps=-1.0e-8"], "optimizer.eps: -1e-08 is not allowed; must be > 0"),
        (["optimizer.betas=[1.0, 0.999]"], "optimizer.betas: (1.0, 0.999) is not allowed"),
        (["optimizer.betas=[0.9, -0.1]"], "must be two numbers in [0, 1)"),
        (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay: -0.1 is not allowed"),
        (["optimizer.name=rmsprop", "optimizer.momentum=-0.5"], "optimizer.momentum: -0.5"),
        (
            ["optimizer.name=nesterov", "optimizer.momentum=0"],
            "optimizer.momentum: 0.0 is not allowed; nesterov needs momentum > 0",
        ),
        (["optimizer.name=sgd", "optimizer.momentum=0.9"], "use optimizer.name=momentum"),
    ],
)
def test_optimizer_arguments_checked_on_load_and_validate(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    # they used to pass here and fail inside every Ray worker, when torch built the optimizer
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "digits.yaml", overrides)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(parse_config({}, overrides))  # what `stride sweep` runs on every variant


def test_optimizer_arguments_checked_when_a_sweep_expands() -> None:
    base = yaml.safe_load((ROOT / "configs" / "digits.yaml").read_text())
    with pytest.raises(ConfigError, match=r"sweep variant \{'optimizer.name': 'sgd'\}.*betas"):
        prepare(
            base,
            ["optimizer.betas=[0.9, 0.99]"],
            build_plan(parse_grid(["optimizer.name=adam,sgd"])),
        )


@pytest.mark.parametrize("name", OPTIMIZERS.names())
@pytest.mark.parametrize(
    "override",
    [
        "optimizer.lr=0.5",
        "optimizer.weight_decay=0",
        "optimizer.weight_decay=0.1",
        "optimizer.momentum=0",
        "optimizer.momentum=0.5",
        "optimizer.betas=[0, 0]",
        "optimizer.betas=[0.5, 0.9]",
        "optimizer.eps=1.0e-6",
    ],
)
def test_what_validate_accepts_torch_builds(name: str, override: str) -> None:
    cfg = parse_config({}, [f"optimizer.name={name}", override])
    try:
        validate(cfg)
    except ConfigError:
        return
    build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg.optimizer)


def test_relative_data_root_is_resolved_where_the_config_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = parse_config({"data": {"name": "folder", "root": "imgs"}})
    assert cfg.data.root == str(Path.cwd() / "imgs")
    assert parse_config({}, ["data.root=../data/./imgs"]).data.root == str(
        Path.cwd().parent / "data" / "imgs"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a Ray worker re-parses the dict in its own directory
    assert parse_config(cfg.to_dict()) == cfg


def test_absolute_home_and_missing_data_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert parse_config({}, ["data.root=/srv/imgs"]).data.root == "/srv/imgs"
    assert parse_config({}, ["data.root=~/imgs"]).data.root == str(tmp_path / "home" / "imgs")
    assert parse_config({}).data.root is None
    with pytest.raises(ConfigError, match=re.escape("data.root: '' is not allowed")):
        parse_config({}, ["data.root=''"])
