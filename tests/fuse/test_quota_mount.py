"""Quotas over the mount, with two real local users (xfs.mrc.quotas, ``xfs quota``).

A user's bytes quota counts every replica of the user's files; a write past it fails
with EDQUOT ("Disk quota exceeded", at write(2) or at fsync/close: writes are write-back),
never EIO, while another user in the same directory writes on; ``df`` shows the caller
the tightest quota that applies to it; a files quota refuses the create past it; removing
a file makes room again; truncate and chown are held to the quota; a quota on the whole
volume (principal '') holds every user. The usage kept stays what the inodes hold (fsck).

The last test sets a files quota after the user's mount leased a directory she made
(docs/design/quotas.md): the lease comes back, so creates there are counted like any other,
and df, ``xfs quota show`` and the creates agree.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuse.test_multiuser import as_user, local_accounts, ok
from tests.system.grid import Grid, Workdirs, run

pytestmark = [pytest.mark.fuse, pytest.mark.system]

TIMEOUT = 60
MiB = 1 << 20
BLOCK = 4096  # what statfs counts in (xfs.mrc.handlers.STATFS_BLOCK)
EDQUOT = errno.errorcode[errno.EDQUOT]

# Write ARGV[2] MiB to ARGV[1] (made anew), fsync and close it: prints what was written
# and the first error with the step it came at (write, fsync, close) as JSON.
_WRITE = """
import errno, json, os, sys
path, mib = sys.argv[1], int(sys.argv[2])
out = {"written": 0, "error": None, "at": None}
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
chunk = b"q" * (1 << 20)
try:
    out["at"] = "write"
    for _ in range(mib):
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            out["written"] += n
            view = view[n:]
    out["at"] = "fsync"
    os.fsync(fd)
except OSError as e:
    out["error"] = errno.errorcode.get(e.errno, str(e.errno))
try:
    os.close(fd)
except OSError as e:
    if out["error"] is None:
        out["error"], out["at"] = errno.errorcode.get(e.errno, str(e.errno)), "close"
if out["error"] is None:
    out["at"] = None
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def accounts() -> Iterator[Callable[[], tuple[str, ...]]]:
    """Makes fresh local accounts, all removed when the module is done: none of their
    uids is given to another account while the mount may still take it for the old one
    (ACCOUNT_RECHECK, see test_multiuser's test_a_reused_uid_is_another_user)."""
    with contextlib.ExitStack() as made:
        yield lambda: made.enter_context(local_accounts("alice", "bob"))


@pytest.fixture
def users(accounts: Callable[[], tuple[str, ...]]) -> tuple[str, str]:
    """Two fresh local accounts per test: their mount's sessions hold nothing yet (no
    files, no inode numbers reserved for directory leases)."""
    alice, bob = accounts()
    return alice, bob


@pytest.fixture
def shared(workdirs: Workdirs) -> Path:
    d, _ = workdirs.pair("quotas")
    os.chmod(d, 0o1777)
    return d


def volume(grid: Grid) -> str:
    return str(json.loads((grid.state / "grid.json").read_text())["volume"])


def principal(user: str) -> str:
    """The grid name of a local user's auto-enrolled credential."""
    return f"{user}@local"


def quota(grid: Grid, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``xfs quota ...`` as the grid's administrator (root: the VO's super user)."""
    return grid.admin("quota", *args, timeout=TIMEOUT, check=check)


def shown(grid: Grid) -> dict[str, dict[str, Any]]:
    """``xfs quota show --json``, by principal ('' the volume)."""
    rows = json.loads(quota(grid, "show", volume(grid), "--json").stdout)
    assert all(r["volume"] == volume(grid) for r in rows), rows
    return {r["principal"]: r for r in rows}


def write_as(user: str, path: Path, mib: int) -> dict[str, Any]:
    """``user`` writes ``mib`` MiB to ``path`` (see ``_WRITE``)."""
    # (the venv's interpreter lives under /root: use the system's, which anyone may run)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    proc = run(
        ["runuser", "-u", user, "--", python, "-c", _WRITE, str(path), str(mib)],
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def df(user: str, where: Path) -> dict[str, int]:
    """What ``df`` shows ``user`` for the mount: size and avail in bytes, inodes."""
    proc = as_user(user, "df -B1 --output=size,avail,itotal,iavail .", where)
    values = ok(proc).splitlines()[-1]
    return dict(
        zip(("size", "avail", "itotal", "iavail"), (int(v) for v in values.split()), strict=True)
    )


def replicas_in(d: Path) -> int:
    """How many replicas a new file of directory ``d`` has (``xfs.replicas``)."""
    probe = d / "replicas-probe"
    probe.write_bytes(b"p")
    try:
        return len(json.loads(os.getxattr(probe, "xfs.replicas"))["replicas"])
    finally:
        probe.unlink()


def usage(grid: Grid, who: str) -> tuple[int, int]:
    """(files, bytes) that ``who``'s quota (or the volume's, '') counts now."""
    row = shown(grid)[who]
    return int(row["files"]), int(row["bytes"])


def refused(proc: subprocess.CompletedProcess[str]) -> None:
    """The command failed with EDQUOT, not with EIO or anything else."""
    assert proc.returncode != 0 and "Disk quota exceeded" in proc.stderr, proc
    assert "Input/output error" not in proc.stderr, proc


def edquot(result: dict[str, Any]) -> None:
    """A write that the quota stopped: EDQUOT at write(2), fsync or close, never EIO."""
    assert result["error"] == EDQUOT, result
    assert result["at"] in ("write", "fsync", "close"), result


@pytest.mark.timeout(90)
def test_a_users_quota_holds_her_and_not_the_other_user(
    grid: Grid, users: tuple[str, str], shared: Path
) -> None:
    alice, bob = users
    vol, pa = volume(grid), principal(alice)
    factor = replicas_in(shared)  # bytes count each of them
    limit, files = 4 * MiB * factor, 5  # room for 4 MiB of alice's data, and 5 inodes
    try:
        ok(quota(grid, "set", vol, "--principal", pa, "--bytes", str(limit), "--files", str(files)))
        row = shown(grid)[pa]
        assert (row["bytes_limit"], row["files_limit"]) == (limit, files), row
        assert (row["bytes"], row["files"]) == (0, 0), row  # a fresh user holds nothing

        # 2 MiB fit, counted once per replica
        assert write_as(alice, shared / "a1", 2) == {"written": 2 * MiB, "error": None, "at": None}
        assert usage(grid, pa) == (1, 2 * MiB * factor)
        # 4 MiB more do not: EDQUOT once the quota's room is used, what was written stays
        second = write_as(alice, shared / "a2", 4)
        edquot(second)
        assert second["written"] <= 2 * MiB, second
        assert (shared / "a2").stat().st_size == second["written"]
        used = usage(grid, pa)
        assert used == (2, (2 * MiB + second["written"]) * factor), used
        assert used[1] <= limit

        # bob, without a quota, writes on in the same directory
        assert write_as(bob, shared / "b1", 8) == {"written": 8 * MiB, "error": None, "at": None}
        assert ok(as_user(bob, "wc -c < b1", shared)).strip() == str(8 * MiB)

        # df shows alice her quota, and bob the grid
        mine = df(alice, shared)
        assert mine["size"] == limit, mine
        assert abs(mine["avail"] - (limit - used[1])) < BLOCK, (mine, used)
        assert (mine["itotal"], mine["iavail"]) == (files, files - used[0]), mine
        theirs = df(bob, shared)
        assert theirs["size"] > limit and theirs["itotal"] > files, theirs

        # the files quota: creates up to it work, the next one of any kind is refused
        for n in range(used[0], files):
            ok(as_user(alice, f"touch f{n}", shared))
        assert usage(grid, pa)[0] == files
        for script in ("touch one-too-many", "mkdir one-too-many", "ln -s a1 one-too-many"):
            refused(as_user(alice, script, shared))
        assert not (shared / "one-too-many").exists()
        assert df(alice, shared)["iavail"] == 0
        ok(as_user(bob, "touch bobs-files-are-not-counted && mkdir bobs-dir", shared))

        # removing a file makes room again, for bytes and for files
        ok(as_user(alice, "rm a2", shared))
        assert usage(grid, pa) == (files - 1, 2 * MiB * factor)
        assert write_as(alice, shared / "a3", 1) == {"written": MiB, "error": None, "at": None}
        used = usage(grid, pa)
        assert used == (files, 3 * MiB * factor), used
        mine = df(alice, shared)
        assert abs(mine["avail"] - (limit - used[1])) < BLOCK, (mine, used)

        # a truncate that grows a file past the room left is refused; one that fits is not
        room = (limit - used[1]) // factor  # file bytes alice may still add: 1 MiB
        refused(as_user(alice, f"truncate -s {MiB + room + BLOCK} a3", shared))
        assert (shared / "a3").stat().st_size == MiB
        ok(as_user(alice, f"truncate -s {MiB + room} a3", shared))
        assert usage(grid, pa) == (files, limit)

        # root may not give alice a file her quota cannot hold: bob's 8 MiB
        alice_uid = pwd.getpwnam(alice).pw_uid
        with pytest.raises(OSError) as caught:
            os.chown(shared / "b1", alice_uid, -1)
        assert caught.value.errno == errno.EDQUOT, caught.value
        assert (shared / "b1").stat().st_uid == pwd.getpwnam(bob).pw_uid
        assert usage(grid, pa) == (files, limit)
    finally:
        quota(grid, "clear", vol, "--principal", pa, check=False)
    assert pa not in shown(grid)
    # without the quota alice writes again, and df shows her the grid
    assert write_as(alice, shared / "a4", 4)["error"] is None
    assert df(alice, shared)["size"] > limit


@pytest.mark.timeout(90)
def test_a_quota_on_the_volume_holds_every_user(
    grid: Grid, users: tuple[str, str], shared: Path
) -> None:
    alice, bob = users
    vol = volume(grid)
    factor = replicas_in(shared)
    try:
        # a first limit, to read what the whole volume holds; then room for 1 MiB more
        ok(quota(grid, "set", vol, "--bytes", "1T"))
        nbytes = usage(grid, "")[1]
        limit = nbytes + MiB * factor
        ok(quota(grid, "set", vol, "--bytes", str(limit)))
        row = shown(grid)[""]
        assert (row["bytes_limit"], row["files_limit"], row["bytes"]) == (limit, None, nbytes)

        # df shows it to every user without a quota of their own
        for user in users:
            seen = df(user, shared)
            assert seen["size"] == limit // BLOCK * BLOCK, seen
            assert abs(seen["avail"] - MiB * factor) < BLOCK, seen

        # bob may write the 1 MiB it leaves, and no more
        written = write_as(bob, shared / "b2", 2)
        edquot(written)
        assert written["written"] <= MiB, written
        assert (shared / "b2").stat().st_size == written["written"]
        assert nbytes < usage(grid, "")[1] <= limit
        assert df(bob, shared)["avail"] < BLOCK
        # nor may alice, who has no quota of her own
        edquot(write_as(alice, shared / "a5", 1))
        assert (shared / "a5").stat().st_size == 0

        # the volume's files: none left, for either user, and df says so
        files = usage(grid, "")[0]
        ok(quota(grid, "set", vol, "--files", str(files)))
        assert shown(grid)[""]["bytes_limit"] == limit  # (a limit not given stays)
        for user in users:
            seen = df(user, shared)
            assert (seen["itotal"], seen["iavail"]) == (files, 0), seen
            refused(as_user(user, f"touch {user}-more", shared))
            refused(as_user(user, f"mkdir {user}-dir", shared))
        assert usage(grid, "")[0] == files
    finally:
        quota(grid, "clear", vol, check=False)
    assert "" not in shown(grid)
    # without it both write and create again
    assert write_as(bob, shared / "b3", 2)["error"] is None
    ok(as_user(alice, "mkdir a6 && touch a6/a7", shared))
    # what the MRC kept of each owner's usage is what its inodes hold (a read-only fsck
    # of the running grid's store)
    checked = grid.xfs("fsck", "--state", str(grid.state), timeout=TIMEOUT)
    assert checked.stdout.strip().endswith("mrc.db: clean"), checked.stdout


@pytest.mark.timeout(60)
def test_a_files_quota_set_after_the_user_made_files(
    grid: Grid, users: tuple[str, str], shared: Path
) -> None:
    alice, _ = users
    vol, pa = volume(grid), principal(alice)
    # a directory she made: her mount asks for its lease and reserves inode numbers
    ok(as_user(alice, "touch before && mkdir -m 700 mine", shared))
    try:
        ok(quota(grid, "set", vol, "--principal", pa, "--files", "5"))
        assert usage(grid, pa)[0] == 2
        assert df(alice, shared)["iavail"] == 3
        # what quota show and df promise: 3 more inodes, wherever she makes them
        here = as_user(alice, "touch after", shared)
        there = as_user(alice, "cd mine && touch m1 m2 m3 m4 m5 m6", shared)
        made = usage(grid, pa)[0]
        assert here.returncode == 0 and made == 5, (here.stderr, there.stderr, made)
    finally:
        quota(grid, "clear", vol, "--principal", pa, check=False)
