"""POSIX conformance on real mounts: one embedded grid per module, plus a second mount of
the same volume (a second client, as another grid node would be) for the tests of
locks, appends, exclusive creates and close-to-open visibility.

The grids keep their metadata in PostgreSQL where it is installed (``.ci/run`` installs
it: each grid a schema of its own in one cluster, ``conformance_store``), in SQLite
otherwise: see ``conformance_metadata``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import needs_fuse, workdirs
from tests.system.grid import Grid, running_grid

__all__ = ["grid", "needs_fuse", "other_mount", "workdirs"]


@pytest.fixture(scope="module")
def grid(request: pytest.FixtureRequest, conformance_store: str) -> Iterator[Grid]:
    """A running embedded grid (MRC, three OSDs, the mount) for the whole module, with
    the module's ``GRID_SETTINGS`` (``xfs up --set``) if it has any."""
    needs_fuse()
    settings = list(getattr(request.module, "GRID_SETTINGS", []))
    with running_grid(metadata=conformance_store, settings=settings) as g:
        yield g


@pytest.fixture(scope="module")
def other_mount(grid: Grid) -> Path:
    """The same volume mounted a second time by its own client process."""
    return grid.extra_mount("b")
