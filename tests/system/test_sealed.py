"""Read-only (sealed) replication with real processes (docs/design/replication.md).

One 100 MiB file, sealed when its writer closes it (a ``ronly`` directory policy), in a
grid of five OSDs:

- the healer brings it to three complete replicas, filled in the background;
- its policy then asks for five with ``--fill partial``: the two new replicas stay empty
  until reads reach them, and then hold exactly the objects read through them;
- two of the three complete replicas are killed: every byte still reads back, the
  partial replicas filling the rest of their share from the one complete survivor;
- once the healer has dropped the dead replicas, removing the last complete one is
  refused (``EBUSY``), and writing to the file is refused all along (``EPERM``).

Every blocking call on the mount runs in a thread with a deadline; the grid is stopped
when the test ends, pass or fail.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.grid import Grid
from tests.system.replicas import (
    HEAL_DEADLINE,
    MiB,
    bounded,
    file_ids,
    replicas_of,
    sha256_of,
    started_grid,
    store_of,
    wait_for,
    write_file,
)

pytestmark = [pytest.mark.system]

SIZE = 100 * MiB
SEED = 5


def read_range(path: Path, offset: int, length: int) -> bytes:
    def run() -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    return bounded(run)


def complete_and_partial(info: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The OSDs of the complete and of the incomplete replicas (width 1: one each)."""
    complete = [r["osds"][0] for r in info["replicas"] if r["complete"]]
    partial = [r["osds"][0] for r in info["replicas"] if not r["complete"]]
    return complete, partial


def held(grid: Grid, role: str, fid: str, expected: bytes) -> set[int]:
    """The objects of ``fid`` on one OSD's disk, each checked against ``expected``."""
    store = store_of(grid, role)
    objects = {objno for objno, _, _ in store.sums(fid)}
    for objno in objects:
        assert store.load(fid, objno) == expected[objno * MiB : (objno + 1) * MiB], (
            f"object {objno} on {role} differs from what was written"
        )
    return objects


@pytest.mark.timeout(300)
def test_sealed_file_with_partial_replicas_survives_losing_all_but_one_complete() -> None:
    with started_grid(5, "xfs-test-sealed-") as grid:
        directory = grid.mnt / "sealed"
        bounded(directory.mkdir)
        grid.xfs("policy", "set", str(directory), "--replication", "ronly", "--factor", "3")
        path = directory / "image"
        digest, size = write_file(path, [("write", 0, SIZE)], SEED)
        expected = random.Random(SEED).randbytes(SIZE)  # what write_file wrote
        assert size == SIZE and hashlib.sha256(expected).hexdigest() == digest
        (fid,) = file_ids(grid, [path]).values()

        # sealed at close: read-only, and filled up to three complete replicas
        with pytest.raises(PermissionError) as refused:
            bounded(lambda: os.open(path, os.O_WRONLY))
        assert refused.value.errno == errno.EPERM

        def three_complete() -> bool:
            info = replicas_of(path)
            return info["policy"] == "ronly" and len(complete_and_partial(info)[0]) == 3

        wait_for("filled to three complete replicas", three_complete, grid, HEAL_DEADLINE)

        # five replicas: the two new ones are partial and stay empty until read
        grid.xfs("policy", "set", str(path), "--factor", "5", "--fill", "partial")

        def five() -> bool:
            return len(replicas_of(path)["replicas"]) == 5

        wait_for("five replicas placed", five, grid, HEAL_DEADLINE)
        info = replicas_of(path)
        order = [r["osds"][0] for r in info["replicas"]]
        complete, partial = complete_and_partial(info)
        assert len(complete) == 3 and len(partial) == 2 and info["fill"] == "partial", info
        roles = grid.osd_roles_by_uuid()
        time.sleep(2)  # a few healing rounds (mrc.heal_interval is 0.5 s)
        for osd in partial:
            assert held(grid, roles[osd], fid, expected) == set(), f"{osd} was filled eagerly"

        # reads are spread over the replicas (object k from replica k mod 5 first): each
        # partial replica fetches its share from a complete one, on demand
        half = SIZE // 2
        assert read_range(path, 0, half) == expected[:half]
        share = {osd: {k for k in range(SIZE // MiB) if order[k % 5] == osd} for osd in partial}
        for osd in partial:
            objects = held(grid, roles[osd], fid, expected)
            assert {k for k in share[osd] if k < half // MiB} <= objects <= share[osd], (
                f"partial replica {osd} holds {sorted(objects)}"
            )
        assert complete_and_partial(replicas_of(path))[1] == partial  # still partial

        # lose two of the three complete replicas: everything still reads back, the
        # partial replicas filling the rest of their share from the survivor
        *lost, survivor = complete
        for osd in lost:
            grid.kill(roles[osd])
        assert sha256_of(path) == digest
        for osd in partial:
            assert held(grid, roles[osd], fid, expected) == share[osd], f"{osd} not filled"

        # once the dead ones are dropped, the last complete replica stays
        def dropped() -> bool:
            return not set(lost) & {r["osds"][0] for r in replicas_of(path)["replicas"]}

        wait_for("dead replicas dropped", dropped, grid, HEAL_DEADLINE)
        busy = grid.xfs("replica", "remove", str(path), "--osd", survivor, check=False)
        assert busy.returncode != 0 and "busy" in busy.stderr.lower(), busy
        assert survivor in {r["osds"][0] for r in replicas_of(path)["replicas"]}
        assert sha256_of(path) == digest
