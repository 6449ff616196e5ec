"""ENOSPC when storage is out: a grid whose three OSDs each keep their objects on a small
tmpfs of their own, filled through the mount.

Linux answers a write past the free space with ENOSPC from ``write(2)``. xfs writes back
in the background, so the same error may arrive from a later ``write``, from ``fsync`` or
from ``close`` (README, "POSIX behaviour"); it must be ENOSPC, not EIO, and nothing
written before must be lost.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import needs_fuse
from tests.system.grid import Grid, mounted

MiB = 1 << 20
OSD_SPACE = 80 * MiB  # just over the MRC's placement floor of 64 MiB per OSD
OSD_COUNT = 3
TOO_MUCH = OSD_COUNT * OSD_SPACE + 32 * MiB
BLOCK = bytes(range(256)) * (MiB // 256)


def _mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")


def _unmount(path: Path) -> None:
    if mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def small_disks() -> Iterator[tuple[Grid, Path]]:
    """A grid whose OSDs sit on 80 MiB each, and a local tmpfs of the same total size."""
    needs_fuse()
    root = Path(tempfile.mkdtemp(prefix="xfs-test-enospc-", dir="/tmp"))
    os.chmod(root, 0o755)
    grid = Grid(root)
    disks = [grid.state / f"osd{i}" / "data" for i in range(1, OSD_COUNT + 1)]
    local = root / "local"
    try:
        for disk in disks:
            _mount_tmpfs(disk, OSD_SPACE)
        _mount_tmpfs(local, OSD_COUNT * OSD_SPACE)
        grid.up()
        yield grid, local
        grid.assert_no_bugs_logged()
    finally:
        grid.cleanup()
        for path in [*disks, local]:
            _unmount(path)
        if not mounted(grid.mnt):
            shutil.rmtree(root, ignore_errors=True)


def fill(path: Path, total: int) -> OSError | None:
    """Write ``total`` bytes in 1 MiB blocks, fsync and close: the first error, if any."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    failure: OSError | None = None
    try:
        written = 0
        while written < total:
            written += os.write(fd, BLOCK)
        os.fsync(fd)
    except OSError as e:
        failure = e
    finally:
        try:
            os.close(fd)
        except OSError as e:
            failure = failure or e
    return failure


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def wait_for(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_volume_gives_enospc_loses_nothing_and_recovers(
    small_disks: tuple[Grid, Path],
) -> None:
    grid, local = small_disks
    kept = grid.mnt / "kept.bin"
    kept.write_bytes(os.urandom(3 * MiB + 12345))
    kept_digest = digest(kept)

    # the same operation on local disk of the same total size: Linux says ENOSPC
    local_error = fill(local / "big.bin", TOO_MUCH)
    assert local_error is not None and local_error.errno == errno.ENOSPC

    error = fill(grid.mnt / "big.bin", TOO_MUCH)
    assert error is not None, "writing more than the OSDs hold succeeded"
    assert error.errno == errno.ENOSPC, f"expected ENOSPC, got {error!r}"

    # with every OSD under the placement floor, a new file is refused up front
    def create_refused() -> bool:
        try:
            (grid.mnt / "new.bin").write_bytes(b"x")
        except OSError as e:
            assert e.errno == errno.ENOSPC, f"expected ENOSPC, got {e!r}"
            return True
        (grid.mnt / "new.bin").unlink()
        return False

    wait_for(create_refused, "a create to be refused once the OSDs report they are full")
    assert free_bytes(grid.mnt) < OSD_COUNT * OSD_SPACE // 2

    # a create the mount queued under its lease of the directory (after a few creates
    # and unlinks there) lands without a layout and fails at the write instead: the
    # file stays, empty, as on a full local disk
    new = grid.mnt / "new.bin"
    if new.exists():
        assert new.stat().st_size == 0
        new.unlink()

    # nothing written before was lost; the mount still reads and lists
    assert digest(kept) == kept_digest
    assert sorted(p.name for p in grid.mnt.iterdir()) == ["big.bin", "kept.bin"]

    # freeing the space makes the volume writable again
    (grid.mnt / "big.bin").unlink()
    wait_for(lambda: free_bytes(grid.mnt) > OSD_COUNT * OSD_SPACE * 0.9, "the space to come back")
    again = grid.mnt / "again.bin"
    data = os.urandom(20 * MiB)

    def written() -> bool:
        try:
            again.write_bytes(data)
        except OSError as e:
            assert e.errno == errno.ENOSPC, f"expected ENOSPC, got {e!r}"
            return False
        return True

    wait_for(written, "a write to succeed after the space came back")
    assert again.read_bytes() == data
    assert digest(kept) == kept_digest
    with contextlib.suppress(FileNotFoundError):
        again.unlink()
