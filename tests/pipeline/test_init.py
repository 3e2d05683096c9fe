"""Weight initialisers (`model.init`): each against its formula, the activation's gain,
the meta-device build, the config's errors and config.json."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.config import ConfigError, parse_config
from pipeline.initialisers import INITIALISERS, fans, following_gains
from pipeline.layers import Conv2d
from pipeline.model import CNN, build_model
from tests.pipeline.typed import layer

# The standard deviation each scheme must give a weight, from its textbook formula.
STDS = {
    "he_normal": lambda fi, fo, g: g / math.sqrt(fi),
    "he_uniform": lambda fi, fo, g: g / math.sqrt(fi),
    "xavier_normal": lambda fi, fo, g: g * math.sqrt(2 / (fi + fo)),
    "xavier_uniform": lambda fi, fo, g: g * math.sqrt(2 / (fi + fo)),
    "default": lambda fi, fo, g: 1 / math.sqrt(3 * fi),  # U(-1/sqrt(fi), 1/sqrt(fi))
}


def _model(init: str, activation: str = "relu", **act: float) -> CNN:
    cfg = parse_config(
        {
            "model": {
                "init": init,
                "activation": {"name": activation, **act},
                "blocks": [
                    {"type": "conv", "channels": 64, "kernel": 3},
                    {"type": "conv", "channels": 64, "kernel": 3, "batch_norm": True},
                ],
                "head": {"hidden": [256]},
            }
        }
    )
    torch.manual_seed(0)
    return build_model(cfg.model, input_shape=(1, 16, 16), num_classes=10)


@pytest.mark.parametrize("init", INITIALISERS.names())
@pytest.mark.parametrize(
    ("activation", "act", "gain"),
    [
        ("relu", {}, math.sqrt(2)),
        ("leaky_relu", {"negative_slope": 0.3}, math.sqrt(2 / 1.09)),
        ("tanh", {}, 5 / 3),
        ("sigmoid", {}, 1.0),
    ],
)
def test_initialiser_gives_the_std_of_its_formula(
    init: str, activation: str, act: dict, gain: float
) -> None:
    assert init in STDS, f"add the formula of {init!r} to STDS"
    model = _model(init, activation, **act)
    for module in model.modules():
        if not isinstance(module, Conv2d | nn.Linear):
            continue
        fan_in, fan_out = fans(module.weight)
        last = module is model.head.fc  # no activation after it: gain 1
        want = STDS[init](fan_in, fan_out, 1.0 if last or init == "default" else gain)
        n = module.weight.numel()
        tolerance = 4 * want * math.sqrt(2 / n) + 1e-3 * want  # the sample std's spread
        assert abs(module.weight.std().item() - want) < tolerance, (init, module)
        assert abs(module.weight.mean().item()) < 4 * want / math.sqrt(n)
        assert module.bias is not None
        if init != "default":
            assert torch.count_nonzero(module.bias) == 0
        if init.endswith("uniform"):
            assert module.weight.abs().max().item() <= math.sqrt(3) * want * (1 + 1e-6)
    bn = layer(model.features[1].bn, nn.BatchNorm2d)
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)  # batch norm keeps its own


def test_gain_comes_from_the_activation_after_each_weight_layer() -> None:
    model = _model("he_normal", "leaky_relu", negative_slope=0.2)
    gains = following_gains(model)
    a = math.sqrt(2 / 1.04)
    assert gains[layer(model.features[0].conv, Conv2d)] == pytest.approx(a)
    assert gains[layer(model.features[1].conv, Conv2d)] == pytest.approx(a)  # batch norm in between
    assert gains[layer(model.head.fc0, nn.Linear)] == pytest.approx(a)
    assert gains[layer(model.head.fc, nn.Linear)] == 1.0  # the output layer
    maxout = _model("he_normal", "maxout")
    fc0 = layer(maxout.head.fc0, nn.Linear)
    assert following_gains(maxout)[fc0] == pytest.approx(1.0, abs=1e-6)


def test_default_init_is_the_framework_reset_with_the_same_draws() -> None:
    """`default` on the meta device then materialised equals building on the CPU."""
    model = _model("default")
    torch.manual_seed(0)
    direct = nn.Conv2d(1, 64, 3, padding=1)
    torch.testing.assert_close(layer(model.features[0].conv, Conv2d).weight, direct.weight)


def test_every_tensor_is_written_when_materialised() -> None:
    """`to_empty` leaves garbage; every initialiser must overwrite all of it."""
    for init in INITIALISERS.names():
        model = _model(init, "tanh")
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            assert torch.isfinite(tensor.float()).all(), (init, name)
            assert tensor.float().abs().max() < 100, (init, name)


def test_he_keeps_the_forward_scale_of_a_deep_relu_stack() -> None:
    """He's point: the activations' second moment neither explodes nor vanishes."""
    blocks = [{"type": "conv", "channels": 32, "kernel": 3}] * 12
    for init, low, high in (("he_normal", 0.2, 5.0), ("default", 0.0, 0.05)):
        cfg = parse_config({"model": {"init": init, "blocks": blocks}})
        torch.manual_seed(0)
        model = build_model(cfg.model, input_shape=(1, 16, 16), num_classes=10)
        x = torch.randn(32, 1, 16, 16)
        out = model.features(x)
        ratio = (out**2).mean().item() / (x**2).mean().item()
        assert low < ratio < high, (init, ratio)


def test_unknown_init_is_a_config_error_naming_the_choices() -> None:
    cfg = parse_config({"model": {"init": "kaiming"}})
    with pytest.raises(
        ConfigError,
        match=r"model.init: unknown initialiser 'kaiming'; valid: "
        r"default, he_normal, he_uniform, xavier_normal, xavier_uniform",
    ):
        build_model(cfg.model, input_shape=(1, 8, 8), num_classes=10, device="meta")
    with pytest.raises(ConfigError, match=r"model\.init: expected a string"):
        parse_config({"model": {"init": 3}})


def test_init_is_part_of_the_resolved_config() -> None:
    assert parse_config({}).to_dict()["model"]["init"] == "default"
    cfg = parse_config({}, ["model.init=xavier_uniform"])
    assert cfg.model.init == "xavier_uniform"
    assert cfg.hash() != parse_config({}).hash()
