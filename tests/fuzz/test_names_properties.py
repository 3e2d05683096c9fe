"""Model names, versions and run-store names: refused with a domain error or served, never
outside their folder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import targets
from fuzz.workspace import Workspace
from services.inference.config import check_model_name, parse_version
from tests.fuzz.strategies import FUZZ

pytestmark = pytest.mark.timeout(300)

PIECES = ["..", ".", "/", "\\", "digits", "fz", "good-s0-0000", "%2e", "\x00", "é", "~", "1"]
names = st.lists(st.sampled_from(PIECES), max_size=6).map("".join) | st.text(max_size=300)
versions = st.sampled_from(["", "1", "2", "0", "-1", "01", "1.0", " 1", "9" * 30]) | st.text(
    max_size=20
)


@FUZZ
@given(name=names, version=versions)
def test_names_are_answered_with_domain_errors_and_stay_inside(
    ws: Workspace, name: str, version: str
) -> None:
    targets.check_names(name, version)


@FUZZ
@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True))
def test_every_documented_model_name_is_accepted(name: str) -> None:
    assert check_model_name(name) == name


@FUZZ
@given(version=st.integers(1, 10**17))
def test_every_positive_version_parses(version: int) -> None:
    assert parse_version(str(version)) == version
