"""Narrowing helpers for the type checker: each asserts what the test already relies on.

A model's layers read as attributes (`model.head.fc`) are typed `Tensor | Module` by
`nn.Module.__getattr__`, and most fields of a run's records are optional: these give
the value its real type, or fail the test with a plain message when it is not.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)
T = TypeVar("T")


def layer(value: object, kind: type[M]) -> M:
    """`value` (a submodule read as an attribute) as the `kind` of layer it is."""
    assert isinstance(value, kind), f"{type(value).__name__} is not a {kind.__name__}"
    return value


def not_none(value: T | None) -> T:
    """`value`, which the test expects to be set (a record's field, a summary)."""
    assert value is not None
    return value
