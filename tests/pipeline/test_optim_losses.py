"""Every optimizer lowers a small problem's loss; schedules; losses against their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import OptimizerSpec, ScheduleSpec
from pipeline.losses import LOSSES
from pipeline.optim import OPTIMIZERS, build_optimizer, build_schedule, lr_factor, optimizer_kwargs


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_lowers_the_loss_of_a_small_problem(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(128, 6)
    y = (x @ torch.randn(6, 3)).argmax(1)  # linearly separable, 3 classes
    model = torch.nn.Linear(6, 3)
    opt = build_optimizer(model.parameters(), OptimizerSpec(name=name))
    first = F.cross_entropy(model(x), y).item()
    for _ in range(200):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first, f"{name}: {first:.3f} -> {loss.item():.3f}"


def test_optimizer_defaults_and_overrides() -> None:
    assert optimizer_kwargs(OptimizerSpec(name="momentum"))["momentum"] == 0.9
    assert optimizer_kwargs(OptimizerSpec(name="adam", lr=0.1, weight_decay=1e-4)) == {
        "lr": 0.1,
        "weight_decay": 1e-4,
    }
    assert optimizer_kwargs(OptimizerSpec(name="adamw"))["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="adam takes no momentum"):
        optimizer_kwargs(OptimizerSpec(name="adam", momentum=0.5))
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; valid: sgd, momentum"):
        optimizer_kwargs(OptimizerSpec(name="lion"))


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_an_explicit_zero_weight_decay_reaches_the_optimizer(name: str) -> None:
    # 0 is falsy: `spec.weight_decay or default` kept adamw's 0.01 for an explicit 0
    param = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer([param], OptimizerSpec(name=name, weight_decay=0.0))
    assert opt.param_groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("rmsprop", "momentum", 0.0),
        ("adam", "eps", 1e-12),
        ("adam", "betas", (0.0, 0.0)),
        ("momentum", "momentum", 0.0),
        ("adamw", "weight_decay", 0.0),
        ("adamw", "lr", 1e-5),
    ],
)
def test_explicit_values_are_kept_even_when_falsy(name: str, key: str, value: object) -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer([param], OptimizerSpec(name=name, **{key: value}))  # type: ignore[arg-type]
    assert opt.param_groups[0][key] == value


def test_unset_values_take_the_optimizers_default() -> None:
    assert optimizer_kwargs(OptimizerSpec(name="adamw"))["weight_decay"] == 0.01
    assert optimizer_kwargs(OptimizerSpec(name="adamw", weight_decay=0.0))["weight_decay"] == 0.0
    assert "weight_decay" not in optimizer_kwargs(OptimizerSpec(name="adam"))  # torch's 0


def test_schedules() -> None:
    step = ScheduleSpec(name="step", step_size=2, gamma=0.5)
    assert [lr_factor(step, e * 10, 10, 6) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine = ScheduleSpec(name="cosine")
    assert lr_factor(cosine, 0, 10, 4) == pytest.approx(1.0)
    assert lr_factor(cosine, 20, 10, 4) == pytest.approx(0.5)
    assert lr_factor(cosine, 40, 10, 4) == pytest.approx(0.0, abs=1e-12)
    warm = ScheduleSpec(name="none", warmup_epochs=1)
    assert lr_factor(warm, 0, 4, 3) == pytest.approx(0.25)
    assert lr_factor(warm, 3, 4, 3) == pytest.approx(1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = build_schedule(opt, step, steps_per_epoch=1, epochs=6)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
TARGETS = torch.tensor([0, 1])


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def _expected(name: str) -> float:
    rows = LOGITS.tolist()
    total = 0.0
    for row, t in zip(rows, TARGETS.tolist(), strict=True):
        p = _softmax(row)
        onehot = [1.0 if i == t else 0.0 for i in range(3)]
        if name == "cross_entropy":
            total += -math.log(p[t])
        elif name == "binary_cross_entropy":
            s = [1 / (1 + math.exp(-v)) for v in row]
            total += -sum(
                o * math.log(q) + (1 - o) * math.log(1 - q) for o, q in zip(onehot, s, strict=True)
            )
        elif name == "mse":
            total += sum((q - o) ** 2 for q, o in zip(p, onehot, strict=True))
        elif name == "mae":
            total += sum(abs(q - o) for q, o in zip(p, onehot, strict=True))
    return total / len(rows)


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_equals_its_formula(name: str) -> None:
    assert LOSSES.get(name)(LOGITS, TARGETS).item() == pytest.approx(_expected(name), rel=1e-6)
