"""Two MRCs over one PostgreSQL store: a SIGKILL of the one that serves loses nothing.

The grid runs two MRCs on a real PostgreSQL cluster (``xfs up --metadata postgresql
--mrcs 2``): one holds the store's leader lock and serves, the other stands by. Two
mounts of the same volume create, write, rename and unlink files as fast as they can,
each logging an operation only once it returned; a process on the first mount holds a
POSIX lock. The serving MRC is killed with SIGKILL in the middle of it. The mounts must
carry on through the other MRC within the configured time, every logged operation must
be in the namespace with its data, the lock must still be its holder's (the other mount
is refused it), a file open and unlinked before the kill must still be usable through its
descriptor and freed at its close, and fsck of the store must be clean
(docs/design/metadata-ha.md).
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, running_grid
from xfs.common import pgcluster

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]

TAKEOVER = 30.0  # seconds: RetryPolicy.failover, what a mount waits for another MRC

# Creates f{i} (O_EXCL) with its name as data; renames every 5th to r{i}, unlinks every
# 7th; logs each operation once it returned ("!" lines: failed, not acknowledged).
STORM = r"""
import os, sys
d, log, stop = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(d, exist_ok=True)
with open(log, "a", buffering=1) as out:
    i = 0
    while not os.path.exists(stop) and i < 20000:
        name = f"f{i}"
        path = os.path.join(d, name)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                os.write(fd, name.encode() * 100)
            finally:
                os.close(fd)
            out.write(f"c {name}\n")
            if i % 5 == 0:
                os.rename(path, os.path.join(d, f"r{i}"))
                out.write(f"r {name} r{i}\n")
            elif i % 7 == 0:
                os.unlink(path)
                out.write(f"u {name}\n")
        except OSError as e:
            out.write(f"! {name} {e.errno}\n")
        i += 1
"""

# Opens argv[1], writes to it and unlinks it (an orphan: open, no name); once told (a
# line on stdin) writes more through the same descriptor and prints what it reads back.
ORPHAN = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, b"before")
os.unlink(sys.argv[1])
print("unlinked", flush=True)
sys.stdin.readline()
os.pwrite(fd, b"after", 6)
os.fsync(fd)
print(os.pread(fd, 11, 0).decode(), flush=True)
os.close(fd)
"""

HOLD = """
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_SETLKW, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def grid() -> Iterator[Grid]:
    needs_fuse()
    why = pgcluster.available()
    if why:
        pytest.skip(f"no PostgreSQL here: {why}")
    with running_grid(metadata="postgresql", mrcs=2) as g:
        yield g


def state_of(grid: Grid, role: str) -> str:
    """What MRC ``role`` said last of its part: "serving", "standing by", or ""."""
    log = (grid.state / "logs" / f"{role}.log").read_text(errors="replace")
    said = [line for line in log.splitlines() if "MRC serving" in line or "standing by" in line]
    return "" if not said else "serving" if "MRC serving" in said[-1] else "standing by"


def serving(grid: Grid) -> str:
    """The MRC role that serves now."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for role in grid.mrc_roles:
            if grid.pid(role) is not None and state_of(grid, role) == "serving":
                return role
        time.sleep(0.1)
    raise AssertionError(f"no MRC serves\n{grid.logs()}")


def acknowledged(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines() if line and line[0] != "!"]


def expected_files(ops: list[list[str]]) -> dict[str, bytes]:
    """name -> data of what the acknowledged operations leave."""
    files: dict[str, bytes] = {}
    for op in ops:
        if op[0] == "c":
            files[op[1]] = op[1].encode() * 100
        elif op[0] == "r":
            files[op[2]] = files.pop(op[1])
        elif op[0] == "u":
            files.pop(op[1])
    return files


def try_lock(path: Path) -> bool:
    with path.open("r+b") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            assert e.errno in (11, 13), e
            return False
        return True


def test_sigkill_of_the_serving_mrc_loses_nothing(grid: Grid, tmp_path: Path) -> None:
    other = grid.extra_mount("b")
    first = serving(grid)
    standby = next(r for r in grid.mrc_roles if r != first)
    assert grid.pid(standby) is not None, "the standby MRC is not running"
    locked = grid.mnt / "locked"
    locked.write_bytes(b"x" * 100)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), str(locked)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    orphan = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ORPHAN), str(grid.mnt / "orphan")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stop = tmp_path / "stop"
    writers = []
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert not try_lock(other / "locked")
        assert orphan.stdout is not None and orphan.stdout.readline().strip() == "unlinked"
        for k, mnt in enumerate((grid.mnt, other)):
            log = tmp_path / f"storm{k}.log"
            log.touch()
            proc = subprocess.Popen(
                [sys.executable, "-c", STORM, str(mnt / f"storm{k}"), str(log), str(stop)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            writers.append((proc, log))
        deadline = time.monotonic() + 60
        while sum(len(acknowledged(log)) for _, log in writers) < 300:
            assert time.monotonic() < deadline, "the storm did not get going"
            assert all(p.poll() is None for p, _ in writers)
            time.sleep(0.05)
        grid.kill(first)
        killed_at = time.monotonic()
        before = [len(acknowledged(log)) for _, log in writers]
        # both mounts carry on through the standby, which takes over
        while any(len(acknowledged(log)) <= n for (_, log), n in zip(writers, before, strict=True)):
            assert time.monotonic() - killed_at < TAKEOVER, (
                f"no progress {TAKEOVER:g} s after the kill\n{grid.logs()}"
            )
            assert all(p.poll() is None for p, _ in writers)
            time.sleep(0.05)
        took = time.monotonic() - killed_at
        assert serving(grid) == standby
        time.sleep(1.0)
        stop.touch()
        for proc, _ in writers:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        # the lock is still its holder's
        assert holder.poll() is None
        assert not try_lock(other / "locked")
        # the orphan is still there for its opener, and goes with its close
        out, err = orphan.communicate("go\n", timeout=60)
        assert orphan.returncode == 0, err
        assert out.strip() == "beforeafter"
        assert not (grid.mnt / "orphan").exists()
    finally:
        stop.touch()
        for proc, _ in writers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        holder.kill()
        holder.communicate(timeout=30)
        if orphan.poll() is None:
            orphan.kill()
            orphan.communicate(timeout=30)
    failed = [line for _, log in writers for line in log.read_text().splitlines() if line[0] == "!"]
    done = sum(len(acknowledged(log)) for _, log in writers)
    print(f"the mounts carried on {took:.1f} s after the kill; {done} operations "
          f"acknowledged, {len(failed)} failed (sent to the killed MRC, never answered): "
          f"{failed}")
    # only what was in flight to the killed MRC fails (EIO), nothing after: the new MRC
    # places files once the OSDs have reported to it (not ENOSPC meanwhile)
    assert len(failed) <= 10 and all(line.split()[2] == "5" for line in failed), failed
    for k, ((_, log), mnt) in enumerate(zip(writers, (grid.mnt, other), strict=True)):
        ops = acknowledged(log)
        want = expected_files(ops)
        there = {p.name: p.read_bytes() for p in (mnt / f"storm{k}").iterdir()}
        missing = sorted(set(want) - set(there))
        assert not missing, f"{len(missing)} acknowledged names lost: {missing[:10]}"
        gone = [op[1] for op in ops if op[0] in "ru" and op[1] in there]
        assert not gone, f"acknowledged renames or unlinks undone: {gone[:10]}"
        wrong = [n for n, data in want.items() if there[n] != data]
        assert not wrong, f"acknowledged data lost: {wrong[:10]}"
    # the holder's lock ended with it; the other mount may take it now
    deadline = time.monotonic() + 30
    while not try_lock(other / "locked"):
        assert time.monotonic() < deadline, "the lock outlived its holder"
        time.sleep(0.2)
    deadline = time.monotonic() + 30  # the orphan freed once its close reached the MRC
    while grid.store_rows("SELECT count(*) FROM inodes WHERE nlink = 0")[0][0]:
        assert time.monotonic() < deadline, "an orphan outlived its last close"
        time.sleep(0.2)
    checked = grid.xfs("fsck", "--state", str(grid.state), check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().endswith(": clean"), checked.stdout
    # the killed MRC comes back as the standby
    grid.start(first)
    deadline = time.monotonic() + 30
    while state_of(grid, first) != "standing by":
        assert time.monotonic() < deadline, f"{first} did not stand by\n{grid.logs()}"
        time.sleep(0.1)
    assert serving(grid) == standby
