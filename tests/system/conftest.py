"""Fixtures for tests that start real grids: one embedded grid per test module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.grid import Grid, Workdirs, running_grid


def needs_fuse() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not Path("/dev/fuse").exists() or shutil.which("fusermount3") is None:
        pytest.skip("needs /dev/fuse and fusermount3")


@pytest.fixture(scope="module")
def grid() -> Iterator[Grid]:
    """A running embedded grid (MRC, three OSDs, the mount) for the whole module."""
    needs_fuse()
    with running_grid() as g:
        yield g


@pytest.fixture
def workdirs(grid: Grid, tmp_path: Path) -> Workdirs:
    """Per-test directory pairs: ``workdirs.pair(name)`` -> (in the mount, on local disk)."""
    return Workdirs(grid, tmp_path)
