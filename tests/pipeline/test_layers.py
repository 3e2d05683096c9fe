"""Each activation against its textbook formula; Maxout; pooling on small matrices."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import ActivationSpec, parse_config
from pipeline.layers import ACTIVATIONS, Maxout, activation_name, build_activation, build_pool
from pipeline.model import build_model

# The formula each registered activation must equal, written out element by element.
FORMULAS = {
    "sigmoid": lambda v, s: 1 / (1 + math.exp(-v)),
    "tanh": lambda v, s: (math.exp(v) - math.exp(-v)) / (math.exp(v) + math.exp(-v)),
    "relu": lambda v, s: max(0.0, v),
    "leaky_relu": lambda v, s: max(s.negative_slope * v, v),
    "elu": lambda v, s: v if v > 0 else s.alpha * (math.exp(v) - 1),
}


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS.names() if n != "maxout"])
@pytest.mark.parametrize("spec_args", [{}, {"negative_slope": 0.3, "alpha": 0.5}])
def test_activation_equals_its_formula(name: str, spec_args: dict) -> None:
    assert name in FORMULAS, f"add the textbook formula of {name!r} to FORMULAS"
    spec = ActivationSpec(name=name, **spec_args)
    x = torch.randn(257, dtype=torch.float64) * 4
    got = build_activation(spec)(x)
    want = torch.tensor([FORMULAS[name](float(v), spec) for v in x], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_activation_is_named_by_its_registry_entry(name: str) -> None:
    """The layer table names an activation by the module alone (nothing else records it)."""
    assert activation_name(build_activation(ActivationSpec(name=name))) == name


def test_leaky_relu_default_slope_is_one_tenth() -> None:
    act = build_activation(ActivationSpec(name="leaky_relu"))
    assert act(torch.tensor([-2.0])).item() == pytest.approx(-0.2)


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_activation_has_a_finite_gradient(name: str) -> None:
    x = torch.randn(64, 4, dtype=torch.float64, requires_grad=True)
    build_activation(ActivationSpec(name=name))(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_maxout_dense_is_max_of_affine_pieces() -> None:
    torch.manual_seed(0)
    w1, w2 = torch.randn(3, 5), torch.randn(3, 5)
    b1, b2 = torch.randn(3), torch.randn(3)
    x = torch.randn(7, 5)
    # A dense layer producing the pieces side by side: output i uses rows 2i and 2i+1.
    weight = torch.stack([w1, w2], dim=1).reshape(6, 5)
    bias = torch.stack([b1, b2], dim=1).reshape(6)
    got = Maxout(2)(x @ weight.T + bias)
    want = torch.maximum(x @ w1.T + b1, x @ w2.T + b2)
    torch.testing.assert_close(got, want)


def test_maxout_conv_takes_max_over_channel_groups() -> None:
    x = torch.randn(2, 6, 4, 4)
    got = Maxout(3)(x)
    assert got.shape == (2, 2, 4, 4)
    torch.testing.assert_close(got[:, 1], x[:, 3:6].amax(dim=1))


def test_max_and_mean_pool_on_hand_computed_matrices() -> None:
    x = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]).view(
        1, 1, 4, 4
    )
    assert build_pool("max", 2, 2)(x).flatten().tolist() == [6, 8, 14, 16]
    assert build_pool("mean", 2, 2)(x).flatten().tolist() == [3.5, 5.5, 11.5, 13.5]
    # overlapping 3x3 windows, stride 1
    assert build_pool("max", 3, 1)(x).flatten().tolist() == [11, 12, 15, 16]
    assert build_pool("mean", 3, 1)(x).flatten().tolist() == [6, 7, 10, 11]


@pytest.mark.parametrize("kind", ["max", "mean"])
def test_global_pool_head(kind: str) -> None:
    cfg = parse_config(
        {"model": {"blocks": [{"type": "conv", "channels": 4}], "head": {"global_pool": kind}}}
    )
    model = build_model(cfg.model, input_shape=(1, 8, 8), num_classes=3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert type(model.head.pool).__name__ == "GlobalPool"
