"""The durability barrier of a checkpoint version.

A version counts as committed only when every file in it is stored at its replication
policy: on an xfs mount, as many complete replicas as the file's factor, which the MRC
reports in the ``xfs.replicas`` xattr (a sealed file's new replicas fill in the
background; a replica that lost an OSD is replaced and filled by the MRC). The barrier
waits for that, with a deadline, and says how long it waited. A set on another file
system (a local disk, for comparison) gets the ``local`` barrier: fsync, nothing more.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xfs import mounts
from xfs.checkpoint.manifest import Barrier

REPLICAS = "xfs.replicas"
DIGESTS = "xfs.replica.digest"  # answered by the mount (xfs/client/digests.py)
DEFAULT_OBJECT_SIZE = 1 << 20  # the tree digest's object size off xfs
TIMEOUT = 600.0


class BarrierError(OSError):
    """The files did not reach their policy in time (or their state cannot be read)."""


def on_xfs(path: Path) -> bool:
    return mounts.fs_type(path).startswith("fuse.xfs")


def replicas(path: Path) -> dict[str, Any]:
    """What the MRC says of a file's replicas (``xfs.replicas``)."""
    try:
        return dict(json.loads(os.getxattr(path, REPLICAS)))
    except OSError as e:
        raise BarrierError(e.errno, f"cannot read the replicas of {path}: {e.strerror}") from e


def object_size(path: Path, xfs: bool) -> int:
    """The object size the tree digest of file ``path`` uses: its stripe size on xfs
    (``xfs``: the caller knows the file is on an xfs mount), else the default."""
    return int(replicas(path)["stripe_size"]) if xfs else DEFAULT_OBJECT_SIZE


def at_policy(info: dict[str, Any]) -> tuple[bool, int, str]:
    """(whether the file is stored at its policy, its complete replicas, what is missing)."""
    complete = sum(1 for r in info["replicas"] if r["complete"])
    want = max(1, int(info["factor"]))
    if complete >= want:
        return True, complete, ""
    filling = len(info["replicas"]) - complete
    return False, complete, f"{complete} of {want} replicas complete ({filling} filling)"


class ReplicaBarrier:
    kind = "replicas"

    def __init__(
        self,
        timeout: float = TIMEOUT,
        poll: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeout = timeout
        self.poll = poll
        self._clock = clock
        self._sleep = sleep

    def wait(self, paths: Sequence[Path], progress: Callable[[int], None] | None = None) -> Barrier:
        """Return once every file of ``paths`` is at its policy; BarrierError (ETIMEDOUT)
        naming the first that is not, after ``timeout``."""
        start = self._clock()
        deadline = start + self.timeout
        fewest: int | None = None
        for path in paths:
            while True:
                ok, complete, missing = at_policy(replicas(path))
                if ok:
                    break
                if self._clock() > deadline:
                    raise BarrierError(
                        errno.ETIMEDOUT,
                        f"{path} is not stored at its policy after {self.timeout:.0f} s: {missing}",
                    )
                self._sleep(self.poll)
            fewest = complete if fewest is None else min(fewest, complete)
            if progress is not None:
                progress(1)
        return Barrier(self.kind, round(self._clock() - start, 3), fewest or 0)


class LocalBarrier:
    kind = "local"

    def wait(self, paths: Sequence[Path], progress: Callable[[int], None] | None = None) -> Barrier:
        if progress is not None:
            progress(len(paths))
        return Barrier(self.kind, 0.0, 1)
