"""summary.json's `failure` (schema 2): written as a fact, read back, and the schema-1
files written before it still read, their reason's phrase deciding only for them."""

from __future__ import annotations

import json

import pytest

from runstore import (
    FAILURES,
    SCHEMA_VERSION,
    MalformedRun,
    SummaryRecord,
    diverged,
    failure,
    parse_summary,
)

PHRASE = "FloatingPointError: epoch 3: validation loss is nan; the run diverged"


def _file(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_a_new_summary_carries_its_failure_and_the_current_schema() -> None:
    record = SummaryRecord("failed", reason="DivergenceError: ...", failure="diverged")
    stored = json.loads(record.to_json())
    assert stored["schema"] == SCHEMA_VERSION == 2 and stored["failure"] == "diverged"
    back = parse_summary(record.to_json())
    assert back == record and failure(back) == "diverged" and diverged(back)
    error = parse_summary(SummaryRecord("failed", reason="x", failure="error").to_json())
    assert failure(error) == "error" and not diverged(error)
    done = parse_summary(SummaryRecord("completed", test_accuracy=0.9).to_json())
    assert done.failure is None and failure(done) is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [(PHRASE, "diverged"), ("RuntimeError: worker lost", "error"), (None, "error")],
)
def test_a_schema_1_summary_reads_its_failure_from_the_reason(
    reason: str | None, expected: str
) -> None:
    for raw in (
        _file(status="failed", reason=reason),
        _file(schema=1, status="failed", reason=reason),
    ):
        summary = parse_summary(raw)
        assert summary.schema == 1 and summary.failure is None
        assert failure(summary) == expected
    assert failure(parse_summary(_file(status="stopped", reason="asha"))) is None


def test_from_schema_2_the_field_decides_not_the_phrase() -> None:
    quoted = parse_summary(_file(schema=2, status="failed", reason=PHRASE, failure="error"))
    assert failure(quoted) == "error" and not diverged(quoted)
    silent = parse_summary(_file(schema=2, status="failed", reason=PHRASE))
    assert failure(silent) == "error"  # a current writer that does not say: not the training
    plain = parse_summary(_file(schema=2, status="failed", reason="inf", failure="diverged"))
    assert diverged(plain)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"status": "failed", "failure": "oom"}, "failure is 'oom', not one of diverged, error"),
        ({"status": "failed", "failure": 3}, "failure is 3, not a string"),
        ({"status": "completed", "failure": "error"}, "failure 'error' on a run whose status"),
        ({"status": "failed", "schema": 3}, "schema 3 is newer than this reader's 2"),
    ],
)
def test_a_bad_failure_makes_the_summary_malformed(fields: dict, message: str) -> None:
    with pytest.raises(MalformedRun, match=message):
        parse_summary(_file(**{"schema": 2, **fields}))


def test_failures_are_the_documented_ones() -> None:
    assert FAILURES == ("diverged", "error")
