"""Mounting volumes by name, as users and operators do (docs/cli.md):

- ``xfs mount VOLUME MOUNTPOINT`` in the background, ``xfs umount``, one-line errors;
- ``mount -t fuse.xfs`` and an fstab line (``mount -T FILE``) through the
  ``mount.fuse.xfs`` helper that ``xfs mount-helper install`` puts where mount(8) looks,
  and ``umount(8)``;
- ``xfs down`` ends the mounts made by name too;
- the systemd unit files pass ``systemd-analyze verify``;
- ``xfs fsck`` and ``xfs scrub`` check a running grid read-only and name what is wrong.

Every mount made here is ended by the test or by the grid's cleanup; the helper is
removed again if this test installed it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.grid import Grid, mounted, run, xfs_command
from tests.system.replicas import file_ids, flip_byte, store_of

pytestmark = [pytest.mark.system]

REPO = Path(__file__).resolve().parents[2]
HELPER = Path("/sbin/mount.fuse.xfs")


def xfs(grid: Grid, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([*xfs_command(), *args, "--state", str(grid.state)], timeout=90, check=check)


def wait_unmounted(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while mounted(path):
        assert time.monotonic() < deadline, f"{path} is still mounted"
        time.sleep(0.05)


@contextlib.contextmanager
def ended(path: Path) -> Iterator[Path]:
    """``path``, unmounted afterwards whatever happens."""
    try:
        yield path
    finally:
        if mounted(path):
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def test_mount_by_name_and_umount(grid: Grid, tmp_path: Path) -> None:
    point = tmp_path / "mnt"
    point.mkdir()
    (grid.mnt / "by-name.txt").write_text("seen from the second mount")
    with ended(point):
        out = xfs(grid, "mount", "home-root", str(point))
        assert f"is mounted at {point}" in out.stdout
        assert (point / "by-name.txt").read_text() == "seen from the second mount"
        again = xfs(grid, "mount", "home-root", str(point), check=False)
        assert (
            again.returncode == 1 and again.stderr.strip() == f"Error: {point} is mounted already"
        )
        assert "unmounted" in xfs(grid, "umount", str(point)).stdout
        assert not mounted(point)
    missing = xfs(grid, "umount", str(point), check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == f"Error: {point} is not mounted"
    nothing = xfs(grid, "mount", "no-such-volume", str(point), check=False)
    assert nothing.returncode == 1 and not mounted(point)
    assert nothing.stderr.strip() == (
        "Error: the mount of no-such-volume failed: no volume 'no-such-volume'"
    )


def test_mount_t_and_an_fstab_line(grid: Grid, tmp_path: Path) -> None:
    if shutil.which("mount") is None:
        pytest.skip("needs mount(8)")
    ours = not HELPER.exists()
    if ours:
        run([*xfs_command(), "mount-helper", "install"])
    try:
        point = tmp_path / "mnt"
        point.mkdir()
        with ended(point):
            run(["mount", "-t", "fuse.xfs", "home-root", str(point), "-o", f"state={grid.state}"])
            assert mounted(point) and (point / "by-fstab").exists() is False
            (point / "by-fstab").write_text("x")
            run(["umount", str(point)])
            wait_unmounted(point)
            fstab = tmp_path / "fstab"
            fstab.write_text(f"home-root {point} fuse.xfs state={grid.state},nofail,noauto 0 0\n")
            run(["mount", "-T", str(fstab), str(point)])
            assert (point / "by-fstab").read_text() == "x"
            xfs(grid, "umount", str(point))
        bad = run(
            ["mount", "-t", "fuse.xfs", "home-root", str(point), "-o", "colour=blue"], check=False
        )
        assert bad.returncode != 0 and "unknown option 'colour=blue'" in bad.stderr
    finally:
        if ours:
            HELPER.unlink(missing_ok=True)


def test_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze")
    xfs_binary = xfs_command()[0]
    if not Path(xfs_binary).is_absolute():
        pytest.skip("needs an installed xfs script")
    units = sorted((REPO / "packaging" / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"xfs-mrc.service", "xfs-osd@.service", "xfs-mount@.service"}
    for unit in units:  # as installed: ExecStart pointing at this xfs
        text = unit.read_text().replace("/usr/local/bin/xfs", xfs_binary)
        name = unit.name.replace("@.", "@1.")
        (tmp_path / name).write_text(text)
    proc = run(["systemd-analyze", "verify", *map(str, sorted(tmp_path.iterdir()))], check=False)
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if "xfs-" in line and "Failed to" not in line
    ]
    assert proc.returncode == 0, problems or proc.stderr


def test_fsck_and_scrub_of_a_running_grid(grid: Grid, tmp_path: Path) -> None:
    victim = grid.mnt / "scrubbed.bin"
    victim.write_bytes(os.urandom(3 << 20))
    assert xfs(grid, "fsck").stdout.strip().endswith("mrc.db: clean")
    assert xfs(grid, "scrub", "--osd", "osd2").stdout.strip().endswith(", clean")
    fid = file_ids(grid, [victim])[victim]
    flip_byte(store_of(grid, "osd2").object_path(fid, 1), 777)
    found = xfs(grid, "scrub", check=False)
    assert found.returncode == 1, found.stdout
    assert f"  object 1 of {fid}" in found.stdout.splitlines()
    assert found.stdout.count("clean") == 2  # osd1 and osd3
    # a store with a dangling entry: fsck names it (on a copy; the MRC's own stays sound)
    copy = tmp_path / "mrc.db"
    live_db = sqlite3.connect(grid.state / "mrc" / "data" / "mrc.db")
    copied = sqlite3.connect(copy, isolation_level=None)
    try:
        live_db.backup(copied)
        copied.execute("PRAGMA foreign_keys = OFF")
        copied.execute("DELETE FROM inodes WHERE ino = ?", (victim.stat().st_ino,))
    finally:
        live_db.close()
        copied.close()  # (fsck --repair refuses a store any process has open)
    bad = xfs(grid, "fsck", "--db", str(copy), check=False)
    assert bad.returncode == 1 and "problem(s)" in bad.stdout.splitlines()[-1], bad.stdout
    fixed = xfs(grid, "fsck", "--db", str(copy), "--repair")  # nothing has the copy open
    assert "repaired: removed entry" in fixed.stdout and fixed.stdout.endswith("clean\n")
    live = xfs(grid, "fsck", "--repair", check=False)  # the running MRC has its store open
    assert live.returncode == 1 and "stop it first, repair is offline" in live.stderr


def test_down_ends_the_mounts_made_by_name(grid: Grid, tmp_path: Path) -> None:
    point = tmp_path / "mnt"
    point.mkdir()
    with ended(point):
        xfs(grid, "mount", "home-root", str(point))
        down = grid.down()
        assert f"xfs: unmounted {point}" in down.stdout
        assert not mounted(point) and not mounted(grid.mnt)
