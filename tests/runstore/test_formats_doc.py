"""docs/formats.md against the run store's records: every field the page shows is a
field of the record, and every field of a record is on the page."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from runstore import ConfigRecord, EpochRecord, SummaryRecord, parse_epoch, parse_summary
from runstore.records import parse_config_record

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def example(heading: str) -> dict:
    """The JSON block under a `### heading` of docs/formats.md."""
    text = DOC.read_text()
    section = text.split(f"### {heading}", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block, f"no JSON example under {heading}"
    return json.loads(block.group(1))


@pytest.mark.parametrize(
    ("heading", "record"),
    [
        ("config.json", ConfigRecord),
        ("metrics.jsonl", EpochRecord),
        ("summary.json", SummaryRecord),
    ],
)
def test_the_page_shows_exactly_the_fields_of_each_record(heading: str, record: type) -> None:
    shown = set(example(heading))
    fields = {f.name for f in dataclasses.fields(record)}
    assert shown == fields, (
        f"docs/formats.md {heading}: not records' fields {sorted(shown - fields)}, "
        f"missing {sorted(fields - shown)}"
    )


def test_the_examples_parse_into_the_records() -> None:
    config = parse_config_record(json.dumps(example("config.json")).encode())
    assert config.run_id == "adam-s1-3f2a" and config.grid == {"optimizer.name": "adam"}
    epoch = parse_epoch(json.dumps(example("metrics.jsonl")), "example")
    assert epoch.epoch == 1 and epoch.grad_norms[0] == ("features.0.conv", 0.031)
    summary = parse_summary(json.dumps(example("summary.json")).encode())
    assert summary.status == "completed" and summary.val_accuracy == 0.981


def test_records_round_trip_through_their_files() -> None:
    epoch = EpochRecord(3, val_accuracy=0.5, grad_norms=(("a", 1.0),))
    assert parse_epoch(epoch.to_line(), "line") == epoch
    summary = SummaryRecord("failed", reason="boom")
    assert parse_summary(summary.to_json()) == summary
    config = ConfigRecord("e", "r", "now", {"seed": 1}, grid={"seed": 1})
    assert parse_config_record(config.to_json()) == config
