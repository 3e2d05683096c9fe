"""The fuzz workspace (repositories, servicers, run store), once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fuzz.workspace import Workspace, workspace


@pytest.fixture(scope="session")
def ws() -> Iterator[Workspace]:
    space = workspace()
    yield space
    space.close()
    workspace.cache_clear()
