"""A SIGKILL of the MRC during a create storm loses no acknowledged create.

Every reply of the MRC comes after its transaction is committed to the journal (fsynced
by group commit afterwards: docs/design/metadata.md), and the creates a mount
acknowledges under a directory lease before the MRC has them are sent again until they
land (docs/design/leases.md, "Directory leases"), so a crash of the MRC *process* must
lose nothing a client was told. Two writers create files through the mount as fast as
they can, each logging a name only once its create and close returned; the MRC is
killed with SIGKILL in the middle and started again (its OSDs count as alive only once
they report again, so creates landing meanwhile get their layout at their first open).
Every logged name must then be there and usable, and the store as the crash left it
must pass fsck.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.system.conftest import grid, needs_fuse
from tests.system.grid import Grid
from xfs.mrc import fsck
from xfs.mrc.store import Store

__all__ = ["grid", "needs_fuse"]

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(240)]

STORM = r"""
import os, sys
d, log, stop = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(d, exist_ok=True)
with open(log, "a", buffering=1) as out:
    i = 0
    while not os.path.exists(stop) and i < 20000:
        name = f"f{i}"
        try:
            os.close(os.open(os.path.join(d, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except OSError as e:
            out.write(f"! {name} {e.errno}\n")  # not acknowledged: may or may not exist
        else:
            out.write(name + "\n")
        i += 1
"""


def acknowledged(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line and not line.startswith("!")]


def test_sigkill_of_the_mrc_loses_no_acknowledged_create(grid: Grid, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    writers = []
    for k in range(2):
        log = tmp_path / f"storm{k}.log"
        log.touch()
        proc = subprocess.Popen(
            [sys.executable, "-c", STORM, str(grid.mnt / f"storm{k}"), str(log), str(stop)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        writers.append((proc, log))
    try:
        deadline = time.monotonic() + 60
        while sum(len(acknowledged(log)) for _, log in writers) < 300:
            assert time.monotonic() < deadline, "the storm did not get going"
            assert all(p.poll() is None for p, _ in writers)
            time.sleep(0.05)
        grid.kill("mrc")
        before = {k: set(acknowledged(log)) for k, (_, log) in enumerate(writers)}
        time.sleep(1.0)  # the writers now wait on the MRC
        grid.start("mrc")
        deadline = time.monotonic() + 60  # and carry on through the new one
        while any(len(acknowledged(log)) <= len(before[k]) for k, (_, log) in enumerate(writers)):
            assert time.monotonic() < deadline, "no progress after the restart"
            assert all(p.poll() is None for p, _ in writers)
            time.sleep(0.05)
        stop.touch()
        for proc, _ in writers:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    finally:
        stop.touch()
        for proc, _ in writers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    # a file that landed while the new MRC knew no OSD is placed at its first open,
    # once they have reported again (before that the open says ENOSPC, as a create would)
    grid.wait_osds_alive(3, timeout=30)
    for k, (_, log) in enumerate(writers):
        names = acknowledged(log)
        assert before[k] <= set(names) and len(names) > len(before[k]), "no progress after"
        present = {p.name for p in (grid.mnt / f"storm{k}").iterdir()}
        missing = [n for n in names if n not in present]
        assert not missing, f"{len(missing)} acknowledged creates lost: {missing[:10]}"
        for n in sorted(before[k])[-20:] + names[-20:]:  # and they take data
            path = grid.mnt / f"storm{k}" / n
            path.write_bytes(n.encode())
            assert path.read_bytes() == n.encode()
    # the store exactly as a crash leaves it passes fsck
    grid.kill("mrc")
    store = Store.open(grid.state / "mrc" / "data" / "mrc.db")
    try:
        assert fsck.check(store) == []
    finally:
        store.close()
    grid.start("mrc")
