"""The output-size formula, the layer table read from the built model, and the
rejection of specs that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.config import ConfigError, load_config, parse_config
from pipeline.data import describe
from pipeline.layers import Conv2d, conv_output_size, padding_amounts
from pipeline.model import build_model, summarize
from pipeline.spec import format_plan, validate
from tests.pipeline.typed import layer

ROOT = Path(__file__).resolve().parents[2]
MIXED = {
    "blocks": [
        {"type": "conv", "channels": 6, "kernel": 3, "padding": "valid", "batch_norm": True},
        {
            "type": "conv",
            "channels": 4,
            "kernel": 2,
            "padding": "same",
            "activation": {"name": "maxout", "pieces": 2},
        },
        {"type": "pool", "kind": "mean", "size": 2, "stride": 1},
        {"type": "dropout", "p": 0.1},
    ],
    "head": {"hidden": [12], "activation": {"name": "maxout", "pieces": 3}, "dropout": 0.2},
}


@pytest.mark.parametrize("padding", ["valid", "same", "full", 0, 2])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("n", [5, 8, 11])
def test_output_size_formula_matches_the_convolution(
    padding: str | int, kernel: int, stride: int, n: int
) -> None:
    before, after = padding_amounts(padding, kernel)
    expected = (n + before + after - kernel) // stride + 1  # o = floor((n + 2p - m) / s) + 1
    assert conv_output_size(n, kernel, stride, padding) == expected
    if expected < 1:
        return
    conv = Conv2d(1, 1, kernel, stride, padding)
    out = conv(torch.zeros(1, 1, n, n))
    assert out.shape[-2:] == (expected, expected)


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5, 6])
def test_same_keeps_size_at_stride_one_for_odd_and_even_kernels(kernel: int) -> None:
    assert conv_output_size(9, kernel, 1, "same") == 9
    assert conv_output_size(10, kernel, 1, "same") == 10


def test_same_at_stride_s_gives_ceil_n_over_s_and_full_grows() -> None:
    assert conv_output_size(9, 3, 2, "same") == 5
    assert conv_output_size(8, 3, 1, "full") == 10
    assert conv_output_size(8, 3, 1, "valid") == 6


def test_layer_table_is_read_from_the_model_that_trains() -> None:
    cfg = parse_config({"model": MIXED})
    table = summarize(cfg.model, input_shape=(1, 8, 8), num_classes=10)
    model = build_model(cfg.model, input_shape=(1, 8, 8), num_classes=10)
    assert sum(x.params for x in table) == sum(p.numel() for p in model.parameters())
    modules = dict(model.named_modules())
    for row in table:  # every row is a module of the model, with its own parameter count
        assert row.params == sum(p.numel() for p in modules[row.name].parameters())
    shapes = {x.name: x.shape for x in table}
    assert shapes["features.0.conv"] == (6, 6, 6)
    assert shapes["features.1.act"] == (2, 6, 6)  # maxout halves 4 channels
    assert shapes["features.2.pool"] == (2, 5, 5)
    assert shapes["head.act0"] == (4,)  # 12 units / 3 pieces
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    kinds = [(x.name, x.kind, x.detail) for x in table]
    assert kinds[:4] == [
        ("features.0.conv", "conv", "k=3 s=1 p=valid"),
        ("features.0.bn", "batch_norm", ""),
        ("features.0.act", "activation", "relu"),
        ("features.1.conv", "conv", "k=2 s=1 p=same"),
    ]
    assert ("features.2.pool", "pool", "mean 2 s=1") in kinds
    assert ("features.3.drop", "dropout2d", "p=0.1") in kinds
    assert ("head.drop0", "dropout", "p=0.2") in kinds


def test_weights_are_those_of_building_each_module_directly() -> None:
    """The model is built on the meta device, then materialised: the same seed must give
    the weights that constructing the modules one after another gives (trained results
    and checkpoints do not change with the way the model is built)."""
    cfg = parse_config({"model": MIXED})
    torch.manual_seed(0)
    direct = [
        Conv2d(1, 6, 3, 1, "valid"),
        nn.BatchNorm2d(6),
        Conv2d(6, 4, 2, 1, "same"),
        nn.Linear(2 * 5 * 5, 12),
        nn.Linear(4, 10),
    ]
    torch.manual_seed(0)
    model = build_model(cfg.model, input_shape=(1, 8, 8), num_classes=10)
    built: list[nn.Module] = [
        layer(model.features[0].conv, Conv2d),
        layer(model.features[0].bn, nn.BatchNorm2d),
        layer(model.features[1].conv, Conv2d),
    ]
    built += [layer(model.head.fc0, nn.Linear), layer(model.head.fc, nn.Linear)]
    for want, got in zip(direct, built, strict=True):
        for (name, a), b in zip(want.state_dict().items(), got.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
        assert all(p.requires_grad and p.device.type == "cpu" for p in got.parameters())


def test_meta_model_has_no_weights() -> None:
    model = build_model(
        parse_config({}).model, input_shape=(1, 8, 8), num_classes=10, device="meta"
    )
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_summary_of_the_digits_config() -> None:
    cfg = load_config(ROOT / "configs" / "digits.yaml")
    text = format_plan(validate(cfg), describe(cfg.data).input_shape)
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "kind", "output", "params"]
    assert lines[2].split() == ["input", "1x8x8", "0"]
    assert lines[3].split() == ["features.0.conv", "conv", "32x8x8", "320", "k=3", "s=1", "p=same"]
    assert lines[-1] == "total parameters: 45,418"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"blocks": [{"type": "pool", "size": 3}, {"type": "pool", "size": 3}]},
            "model.blocks.1: a 3x3 max pool on a 2x2 input shrinks a side below 1; "
            "pool size must be <= 2",
        ),
        (
            {"blocks": [{"type": "conv", "channels": 4, "kernel": 9, "padding": "valid"}]},
            "model.blocks.0: a 9x9 convolution with padding 'valid' on a 8x8 input gives 0x0",
        ),
        (
            {"activation": "swish", "blocks": [{"type": "conv", "channels": 4}]},
            "model.activation: unknown activation 'swish'; valid: sigmoid, tanh, relu",
        ),
        (
            {"blocks": [{"type": "conv", "channels": 4, "dropout": -0.1}]},
            "model.blocks.0.dropout: dropout must be in [0, 1), got -0.1",
        ),
        (
            {"blocks": [{"type": "dropout", "p": 1.0}]},
            "model.blocks.0.p: dropout must be in [0, 1)",
        ),
        (
            {
                "blocks": [
                    {"type": "conv", "channels": 5, "activation": {"name": "maxout", "pieces": 2}}
                ]
            },
            "model.blocks.0.activation: maxout with 2 pieces needs a width divisible by 2, got 5",
        ),
        (
            {"head": {"hidden": [7], "activation": {"name": "maxout", "pieces": 3}}},
            "maxout with 3 pieces needs a width divisible by 3, got 7",
        ),
        (
            {"blocks": [{"type": "conv", "channels": 4, "padding": "half"}]},
            "padding 'half' is not allowed; allowed: valid, same, full, or an integer >= 0",
        ),
        ({"blocks": [{"type": "conv", "channels": 0}]}, "channels, kernel and stride must be >= 1"),
        (
            {"activation": {"name": "leaky_relu", "negative_slope": 1.5}},  # checked even if unused
            "negative_slope must be in [0, 1), got 1.5",
        ),
        ({"activation": {"name": "elu", "alpha": 0}}, "elu alpha must be > 0"),
        ({"head": {"dropout": 2}}, "model.head.dropout: dropout must be in [0, 1)"),
        (  # an explicit 0 used to fall back to the pool size (`stride or size`)
            {"blocks": [{"type": "pool", "size": 2, "stride": 0}]},
            "model.blocks.0: pool size and stride must be >= 1, got size 2, stride 0",
        ),
    ],
)
def test_invalid_specs_are_rejected_with_layer_value_and_allowed(model: dict, message: str) -> None:
    cfg = parse_config({"model": model})
    with pytest.raises(ConfigError) as info:
        summarize(cfg.model, input_shape=(1, 8, 8), num_classes=10)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("model", "where"),
    [
        ({"blocks": [{"type": "conv", "channels": 4, "padding": 10**30}]}, "model.blocks.0"),
        ({"blocks": [{"type": "pool", "size": 2, "stride": 10**30}]}, "model.blocks.0"),
        ({"head": {"hidden": [10**19]}}, "model.head"),
    ],
)
def test_sizes_torch_cannot_hold_are_a_config_error(model: dict, where: str) -> None:
    """Refused before anything trains, naming the layer (not a TypeError from torch)."""
    cfg = parse_config({"model": model})
    with pytest.raises(ConfigError, match=f"^{where}: torch cannot build this layer"):
        summarize(cfg.model, input_shape=(1, 8, 8), num_classes=10)
