"""Names derived from values keep their values: a run id made from a swept value reads
as that value (sign, exponent, decimal point), as the sweep and the comparison show it."""

from __future__ import annotations

import pytest

from pipeline.search import parse_grid
from pipeline.tune import trial_label, trial_run_id
from runstore import check_name, value_name, values_label

AWKWARD = [1e30, 1e-30, -0.5, 0.1, 0.10, 2.5e-7, -3e22, 1000000.0, 0.07608481233714794]


@pytest.mark.parametrize("value", AWKWARD)
def test_a_number_reads_back_as_itself(value: float) -> None:
    name = value_name(value)
    assert float(name) == value
    check_name("run id", f"v{name}")  # characters a name may hold


def test_the_awkward_values_by_name() -> None:
    assert value_name(1e30) == "1e30"  # not 1e-30, which `+` -> `-` made of it
    assert value_name(1e-30) == "1e-30"
    assert value_name(-0.5) == "-0.5"  # the sign kept
    assert value_name(0.1) == value_name(0.10) == "0.1"  # one float, one name
    assert value_name("0.10") == "0.10"  # text stays the text it is
    assert value_name(3) == "3" and value_name(True) == "true" and value_name(None) == "null"
    assert value_name({"name": "sgd", "lr": -0.5}) == "sgd--0.5"
    assert value_name("a b/c") == "a-b-c"


def test_a_sweep_over_awkward_rates_names_each_run_by_its_rate() -> None:
    (axis,) = parse_grid(["optimizer.lr=0.001,1e30,1e-30,-0.5,0.1,0.10"])
    ids = [trial_run_id({"optimizer.lr": v}, 0, "ab12c_00000") for v in axis.values]
    assert ids == [
        "0.001-s0-ab12c_00000",
        "1e30-s0-ab12c_00000",
        "1e-30-s0-ab12c_00000",
        "v-0.5-s0-ab12c_00000",  # a name starts with a letter or digit
        "0.1-s0-ab12c_00000",
        "0.1-s0-ab12c_00000",
    ]
    for value, run_id in zip(axis.values, ids, strict=True):
        assert float(run_id.removeprefix("v").rsplit("-s0-", 1)[0]) == value
    assert trial_label({"optimizer.name": "adam", "optimizer.lr": -0.5}) == "adam_-0.5"


def test_a_long_label_drops_whole_values_never_part_of_one() -> None:
    label = values_label([0.07608481233714794] * 6, limit=60)
    assert label == "_".join(["0.07608481233714794"] * 3)
    assert values_label([]) == "run"
