from __future__ import annotations

import re
from pathlib import Path

import pytest

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
    ],
)
def test_ranges_checked_on_load(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "configs" / "digits.yaml", [override])


def test_hash_is_stable_and_sensitive() -> None:
    a, b = parse_config({}), parse_config({})
    assert a.hash() == b.hash()
    assert parse_config({}, ["seed=1"]).hash() != a.hash()
