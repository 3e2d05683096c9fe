"""Run configs and `--set` overrides: they load and round-trip, or raise a ConfigError."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fuzz import targets
from fuzz.workspace import Workspace
from pipeline.config import ConfigError, apply_override, load_config
from tests.fuzz.strategies import FUZZ, damaged

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
DIGITS = (ROOT / "configs" / "digits.yaml").read_bytes()
KEYS = [
    "seed", "data.name", "data.image_size", "data.channels", "data.num_classes",
    "data.num_samples", "data.val_fraction", "data.augment.rotation", "model.activation",
    "model.activation.pieces", "model.blocks", "model.blocks.0.channels", "model.blocks.0.kernel",
    "model.blocks.0.stride", "model.blocks.0.padding", "model.blocks.2.size", "model.blocks.1.type",
    "model.head.hidden", "model.head.global_pool", "optimizer.name", "optimizer.lr",
    "optimizer.betas", "schedule.name", "schedule.warmup_epochs", "training.epochs",
    "training.batch_size", "early_stopping.metric", "scaling.workers", "scaling.precision",
]  # fmt: skip
VALUES = [
    "0", "1", "-1", "2", "3", "1e9", "0.5", "nan", ".inf", "true", "null", "''", "adam", "maxout",
    "elu", "same", "full", "valid", "[3, 3]", "[0, 0]", "[1]", "{}", "[]", "{type: pool}",
    "2001-01-01", "!!binary aGk=", "&a [*a]", "[[[[1]]]]", "x" * 3, "99999999999999999999",
]  # fmt: skip
overrides = st.lists(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(KEYS) | st.text(max_size=8),
        st.sampled_from(VALUES) | st.text(max_size=8),
    )
    | st.text(max_size=12),
    max_size=4,
)
yaml_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from([k.split(".")[-1] for k in KEYS]) | st.text(max_size=4),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
).map(lambda doc: yaml.safe_dump(doc).encode())


@FUZZ
@given(text=st.just(DIGITS) | damaged(st.just(DIGITS)) | yaml_documents, sets=overrides)
def test_configs_load_and_round_trip_or_raise_config_error(
    ws: Workspace, text: bytes, sets: list[str]
) -> None:
    targets.check_run_config(text, sets)


@FUZZ
@given(
    section=st.sampled_from(["data", "model", "optimizer", "training", "scaling"]),
    key=st.from_regex(r"[a-z]{1,8}_zz", fullmatch=True),
)
def test_an_unknown_key_is_named_with_the_allowed_ones(
    ws: Workspace, section: str, key: str
) -> None:
    path = ws.root / "unknown.yaml"
    path.write_bytes(DIGITS)
    with pytest.raises(ConfigError, match=key):
        load_config(path, [f"{section}.{key}=1"])


@FUZZ
@given(item=st.text(max_size=40))
def test_any_override_text_applies_or_raises_config_error(item: str) -> None:
    data: dict[str, object] = {"model": {"blocks": [{"type": "conv"}]}}
    with contextlib.suppress(ConfigError):
        apply_override(data, item)
