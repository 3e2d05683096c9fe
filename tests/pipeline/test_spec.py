"""The output-size formula and the rejection of specs that cannot work."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import ConfigError, parse_config
from pipeline.layers import Conv2d
from pipeline.model import build_model
from pipeline.spec import conv_output_size, padding_amounts, plan_model


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


def test_plan_shapes_and_params_match_the_built_model() -> None:
    cfg = parse_config(
        {
            "model": {
                "blocks": [
                    {
                        "type": "conv",
                        "channels": 6,
                        "kernel": 3,
                        "padding": "valid",
                        "batch_norm": True,
                    },
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
                "head": {
                    "hidden": [12],
                    "activation": {"name": "maxout", "pieces": 3},
                    "dropout": 0.2,
                },
            }
        }
    )
    plan = plan_model(cfg.model, (1, 8, 8), 10)
    model = build_model(cfg.model, input_shape=(1, 8, 8), num_classes=10)
    assert sum(p.params for p in plan) == sum(p.numel() for p in model.parameters())
    shapes = {p.name: p.shape for p in plan}
    assert shapes["features.0.conv"] == (6, 6, 6)
    assert shapes["features.1.act"] == (2, 6, 6)  # maxout halves 4 channels
    assert shapes["features.2.pool"] == (2, 5, 5)
    assert shapes["head.act0"] == (4,)  # 12 units / 3 pieces
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    names = {n for n, _ in model.named_modules()}
    assert {p.name for p in plan} <= names


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
        plan_model(cfg.model, (1, 8, 8), 10)
    assert message in str(info.value)
