"""Real FUSE mounts: the fixtures of the system tier (an embedded grid per module)."""

from __future__ import annotations

from tests.system.conftest import grid, needs_fuse, workdirs

__all__ = ["grid", "needs_fuse", "workdirs"]
