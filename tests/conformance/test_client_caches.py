"""The mount's own caches: names known to be absent (negative entries, the listings of
directories a mount made), attributes read ahead with readdir, and what it remembers of
file capabilities (docs/design/metadata.md, "The create path" and "Lookups read ahead").

A second mount with ``negative_timeout = 1`` makes a directory and creates in it, so it
answers lookups of other names there itself. What another client creates meanwhile may
stay unseen for that second, but never loses data or breaks a create: ``O_EXCL`` still
fails with ``EEXIST`` and ``O_CREAT`` opens the other client's file as it is. And once
the window has passed, the name is there. Whatever a mount changes itself it sees at once.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from pathlib import Path

import pytest

from tests.system.conftest import grid, needs_fuse
from tests.system.grid import Grid

__all__ = ["grid", "needs_fuse"]

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(120)]

WINDOW = 1.0  # the second mount's negative_timeout


@pytest.fixture(scope="module")
def quick(grid: Grid) -> Path:
    return grid.extra_mount("quick", settings=f"negative_timeout = {WINDOW}")


def eventually_exists(path: Path, within: float) -> float:
    start = time.monotonic()
    while not path.exists():
        assert time.monotonic() - start < within, f"{path} still absent after {within} s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_name_created_elsewhere_in_a_directory_made_here(grid: Grid, quick: Path) -> None:
    here = quick / "made-here"
    here.mkdir()
    (here / "mine").write_bytes(b"mine")
    assert not (here / "theirs").exists()  # answered from the listing
    there = grid.mnt / "made-here"
    (there / "theirs").write_bytes(b"their data")
    (there / "shared").write_bytes(b"keep me")

    # an exclusive create goes to the MRC, whatever this mount believes
    with pytest.raises(FileExistsError):
        os.close(os.open(here / "theirs", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    # O_CREAT without O_EXCL opens the existing file, contents and all
    fd = os.open(here / "shared", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert os.read(fd, 100) == b"keep me"
    finally:
        os.close(fd)
    # and the name is seen once the window has passed
    eventually_exists(here / "theirs", WINDOW + 5)
    assert (here / "theirs").read_bytes() == b"their data"


def test_a_name_found_missing_appears_after_the_window(grid: Grid, quick: Path) -> None:
    (grid.mnt / "elsewhere").mkdir()
    probe = quick / "elsewhere" / "late"
    assert not probe.exists()  # the MRC said ENOENT: a negative entry
    (grid.mnt / "elsewhere" / "late").write_bytes(b"x")
    waited = eventually_exists(probe, WINDOW + 5)
    assert waited < WINDOW + 5


def test_own_changes_are_seen_at_once(quick: Path) -> None:
    d = quick / "own"
    d.mkdir()
    for i in range(20):
        assert not (d / f"f{i}").exists()
        (d / f"f{i}").write_bytes(b"%d" % i)
        assert (d / f"f{i}").read_bytes() == b"%d" % i
    for i in range(0, 20, 2):
        (d / f"f{i}").unlink()
    assert sorted(p.name for p in d.iterdir()) == sorted(f"f{i}" for i in range(1, 20, 2))
    (d / "f1").rename(d / "g1")
    assert not (d / "f1").exists() and (d / "g1").read_bytes() == b"1"
    with pytest.raises(OSError) as e:
        os.close(os.open(d / "g1", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    assert e.value.errno == errno.EEXIST


def test_file_capabilities_set_and_removed_here_are_seen_at_once(grid: Grid) -> None:
    """The mount remembers that a file has no ``security.capability`` (the kernel asks
    before every write); setting one and removing it here are seen at once."""
    path = grid.mnt / "capable"
    path.write_bytes(b"x")
    with open(path, "ab") as f:
        f.write(b"y")  # the kernel asked, and the answer is remembered
    with pytest.raises(OSError) as e:
        os.getxattr(path, "security.capability")
    assert e.value.errno == errno.ENODATA
    cap = struct.pack("<IIIII", 0x02000000, 1 << 10, 0, 0, 0)  # cap_net_bind_service
    os.setxattr(path, "security.capability", cap)
    assert os.getxattr(path, "security.capability") == cap
    os.removexattr(path, "security.capability")
    with pytest.raises(OSError) as e:
        os.getxattr(path, "security.capability")
    assert e.value.errno == errno.ENODATA
    with open(path, "ab") as f:
        f.write(b"z")
    os.setxattr(path, "security.capability", cap)
    assert os.getxattr(path, "security.capability") == cap
    assert path.read_bytes() == b"xyz"


def drop_kernel_entries() -> None:
    """Make the kernel forget cached names and inodes (root only), so lookups follow."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")


def test_attributes_read_ahead_never_hide_a_change_made_here(grid: Grid, quick: Path) -> None:
    """Two names of one file in a page read ahead: a change through one name must show
    through the other at once (the page is not used once anything changed here)."""
    there = grid.mnt / "ahead"
    there.mkdir()
    for i in range(40):
        (there / f"f{i}").write_bytes(b"x" * i)
    os.link(there / "f35", there / "twin")
    here = quick / "ahead"
    drop_kernel_entries()
    assert [(here / f"f{i}").stat().st_size for i in range(40)] == list(range(40))
    for _ in range(3):
        drop_kernel_entries()
        # f0 goes to the MRC, f1 reads a page ahead (f0 ... f39 and twin), f2 is in it
        assert [(here / f"f{i}").stat().st_size for i in range(3)] == [0, 1, 2]
        os.truncate(here / "f35", 3)  # through one name ...
        assert (here / "twin").stat().st_size == 3  # ... seen through the other
        os.truncate(here / "f35", 35)
    assert sorted(os.listdir(here)) == sorted([f"f{i}" for i in range(40)] + ["twin"])
