"""SweepView writes to the stderr of the moment it is made, not of the moment of import."""

from __future__ import annotations

import io
import sys

import pytest

from pipeline.sweep_results import SweepView


def test_the_default_stream_is_stderr_when_the_view_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bound at import, the default was a stream pytest had closed since, and every later
    # in-process sweep failed with "I/O operation on closed file".
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    assert SweepView([]).stream is now
