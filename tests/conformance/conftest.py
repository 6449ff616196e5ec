"""POSIX conformance on real mounts: one embedded grid per module, plus a second mount of
the same volume (a second client, as another grid node would be) for the tests of
locks, appends, exclusive creates and close-to-open visibility."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import grid, needs_fuse, workdirs
from tests.system.grid import Grid

__all__ = ["grid", "needs_fuse", "other_mount", "workdirs"]


@pytest.fixture(scope="module")
def other_mount(grid: Grid) -> Path:
    """The same volume mounted a second time by its own client process."""
    return grid.extra_mount("b")
