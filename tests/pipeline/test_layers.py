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


# The initialisation gain each activation must declare: torch's calculate_gain where it
# has one, else He's 1 / sqrt(E[f(z)^2]) for z ~ N(0, 1) (computed by sampling here).
def _sampled_gain(f: object) -> float:
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return float(1 / (f(z) ** 2).mean().sqrt())  # type: ignore[operator]


GAINS = {
    "sigmoid": lambda s: torch.nn.init.calculate_gain("sigmoid"),
    "tanh": lambda s: torch.nn.init.calculate_gain("tanh"),
    "relu": lambda s: torch.nn.init.calculate_gain("relu"),
    "leaky_relu": lambda s: torch.nn.init.calculate_gain("leaky_relu", s.negative_slope),
    "elu": lambda s: _sampled_gain(lambda z: torch.nn.functional.elu(z, s.alpha)),
    "maxout": lambda s: _sampled_gain(
        lambda z: torch.randn(s.pieces, len(z), dtype=z.dtype).amax(0)
    ),
}


@pytest.mark.parametrize("name", ACTIVATIONS.names())
@pytest.mark.parametrize("spec_args", [{}, {"negative_slope": 0.3, "alpha": 0.5, "pieces": 3}])
def test_activation_gain_follows_its_formula(name: str, spec_args: dict) -> None:
    assert name in GAINS, f"add the initialisation gain of {name!r} to GAINS"
    spec = ActivationSpec(name=name, **spec_args)
    assert build_activation(spec).gain() == pytest.approx(GAINS[name](spec), rel=1e-2)


# Where each activation is flat (slope below 1% of its peak): the inputs just inside and
# just outside the flat region, and the slope there from autograd.
@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_flat_region_is_where_the_slope_is_below_one_percent_of_its_peak(name: str) -> None:
    spec = ActivationSpec(name=name)
    act = build_activation(spec)
    x = torch.linspace(-12, 12, 2401, dtype=torch.float64).repeat(2, 1).T.contiguous()  # (N, 2)
    x.requires_grad_(True)
    if name == "maxout":  # pieces (x, 0): the second piece wins where x < 0
        pair = torch.stack([x[:, 0], torch.zeros_like(x[:, 0])], dim=1)
        flat = act.flat(pair.detach())
        assert flat[:, 0].tolist() == (pair[:, 0] < 0).tolist()
        assert flat[:, 1].tolist() == (pair[:, 0] > 0).tolist()
        return
    act(x).sum().backward()
    assert x.grad is not None
    slope = x.grad[:, 0]
    peak = slope.max()
    want = slope < 0.01 * peak
    got = act.flat(x.detach())[:, 0]
    if name == "relu":
        want = x.detach()[:, 0] <= 0
    assert got.tolist() == want.tolist()
    if name in ("relu", "sigmoid", "tanh", "elu"):
        assert got.any()  # each of these has a flat part
    if name == "leaky_relu":
        assert not got.any()  # slope 0.1 on the negative side: never dead


def test_sigmoid_and_tanh_flat_thresholds() -> None:
    sig = build_activation(ActivationSpec(name="sigmoid"))
    tanh = build_activation(ActivationSpec(name="tanh"))
    assert sig.flat(torch.tensor([5.9, 6.1, -6.1])).tolist() == [False, True, True]
    assert tanh.flat(torch.tensor([2.9, 3.1, -3.1])).tolist() == [False, True, True]
