"""Run-store files as the analysis service reads them: scans never raise, RPCs map their errors,
and a crash in the middle of the last metrics line loses that line only."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import targets
from fuzz.workspace import GOOD_CONFIG, GOOD_EPOCHS, GOOD_SUMMARY, Workspace
from runstore import parse_metrics
from tests.fuzz.strategies import FUZZ, damaged, dumps, json_values

pytestmark = pytest.mark.timeout(300)

FIELDS = ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "elapsed_seconds", "grad_norms"]
odd = st.one_of(
    json_values,
    st.sampled_from([float("nan"), float("inf"), -1, 0, 10**30, "1", None, True, [], {}]),
    st.just([{"layer": "x", "norm": None}]),
)


@st.composite
def epochs(draw: st.DrawFn) -> bytes:
    """metrics.jsonl: the good epochs with some fields replaced, dropped or reordered."""
    lines = []
    for epoch in draw(st.permutations(GOOD_EPOCHS)) if draw(st.booleans()) else GOOD_EPOCHS:
        line = dict(epoch)
        for field in draw(st.lists(st.sampled_from(FIELDS), max_size=2)):
            if draw(st.booleans()):
                line[field] = draw(odd)
            else:
                line.pop(field, None)
        lines.append(json.dumps(line))
    return ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\n{", "\n\n"]))).encode()


def _config(value: object) -> bytes:
    return dumps({**GOOD_CONFIG, "run_id": targets.RUN_ID, "config": value})


files = st.one_of(st.none(), st.binary(max_size=40))
configs = (
    files
    | st.just(_config(GOOD_CONFIG["config"]))
    | json_values.map(_config)
    | damaged(st.just(_config(GOOD_CONFIG["config"])))
)
summaries = (
    files
    | st.just(dumps(GOOD_SUMMARY))
    | st.builds(
        lambda key, value: dumps({**GOOD_SUMMARY, key: value}),
        st.sampled_from(sorted(GOOD_SUMMARY)),
        odd,
    )
)


@FUZZ
@given(config=configs, metrics=files | epochs() | damaged(epochs()), summary=summaries)
def test_run_files_are_read_or_reported_never_raised(
    ws: Workspace, config: bytes | None, metrics: bytes | None, summary: bytes | None
) -> None:
    targets.check_run_store(config, metrics, summary)


@FUZZ
@given(n=st.integers(1, 3), cut=st.integers(1, 10_000))
def test_a_last_line_cut_short_loses_that_line_only(n: int, cut: int) -> None:
    lines = [json.dumps(e) for e in GOOD_EPOCHS[:n]]
    last = lines[-1]
    text = "".join(line + "\n" for line in lines[:-1]) + last[: cut % len(last)]
    epochs, warnings = parse_metrics(text.encode())
    assert [e.epoch for e in epochs] == list(range(1, n))
    assert len(warnings) == (1 if cut % len(last) else 0)
