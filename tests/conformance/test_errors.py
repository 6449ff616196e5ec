"""Error codes of namespace operations, in Linux's order of precedence: each case runs in
the mount and in a local directory and must fail (or succeed) the same way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conformance.posix import NAME_MAX, PATH_MAX, outcome, same, tree
from tests.system.grid import Grid, Workdirs

pytestmark = [pytest.mark.fuse, pytest.mark.system, pytest.mark.timeout(300)]


def _fixture(root: Path) -> None:
    os.mkdir(root / "d")
    os.mkdir(root / "full")
    (root / "full" / "x").write_bytes(b"x")
    (root / "f").write_bytes(b"data")
    os.symlink("f", root / "s")
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    os.symlink("nowhere", root / "dangling")


def test_basic_errors(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> dict[str, str]:
        _fixture(root)
        r = str(root)
        o: dict[str, str] = {}
        o["open missing"] = outcome(os.open, f"{r}/missing", os.O_RDONLY)
        o["create in missing dir"] = outcome(os.open, f"{r}/missing/x", os.O_CREAT | os.O_WRONLY)
        o["mkdir existing dir"] = outcome(os.mkdir, f"{r}/d")
        o["mkdir existing file"] = outcome(os.mkdir, f"{r}/f")
        o["mkdir over dangling symlink"] = outcome(os.mkdir, f"{r}/dangling")
        o["mknod existing"] = outcome(os.mknod, f"{r}/f")
        o["symlink existing"] = outcome(os.symlink, "t", f"{r}/d")
        o["link onto existing"] = outcome(os.link, f"{r}/f", f"{r}/s")
        o["O_EXCL existing"] = outcome(os.open, f"{r}/f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        o["O_EXCL dangling symlink"] = outcome(
            os.open, f"{r}/dangling", os.O_CREAT | os.O_EXCL | os.O_WRONLY
        )
        o["mkdir below file"] = outcome(os.mkdir, f"{r}/f/x")
        o["open below file"] = outcome(os.open, f"{r}/f/x", os.O_RDONLY)
        o["trailing slash on file"] = outcome(os.open, f"{r}/f/", os.O_RDONLY)
        o["O_DIRECTORY on file"] = outcome(os.open, f"{r}/f", os.O_RDONLY | os.O_DIRECTORY)
        o["open dir for writing"] = outcome(os.open, f"{r}/d", os.O_WRONLY)
        o["open dir O_RDWR|O_CREAT"] = outcome(os.open, f"{r}/d", os.O_RDWR | os.O_CREAT)
        o["truncate dir"] = outcome(os.truncate, f"{r}/d", 0)
        o["rmdir non-empty"] = outcome(os.rmdir, f"{r}/full")
        o["rmdir file"] = outcome(os.rmdir, f"{r}/f")
        o["rmdir symlink to dir"] = outcome(os.rmdir, f"{r}/s")
        o["rmdir missing"] = outcome(os.rmdir, f"{r}/missing")
        o["rmdir ."] = outcome(os.rmdir, f"{r}/d/.")
        o["rmdir .."] = outcome(os.rmdir, f"{r}/d/..")
        o["unlink dir"] = outcome(os.unlink, f"{r}/d")
        o["unlink missing"] = outcome(os.unlink, f"{r}/missing")
        o["unlink below file"] = outcome(os.unlink, f"{r}/f/x")
        o["link to dir"] = outcome(os.link, f"{r}/d", f"{r}/d2")
        o["link missing"] = outcome(os.link, f"{r}/missing", f"{r}/m2")
        o["readlink file"] = outcome(os.readlink, f"{r}/f")
        o["readlink missing"] = outcome(os.readlink, f"{r}/missing")
        o["chmod missing"] = outcome(os.chmod, f"{r}/missing", 0o600)
        o["rename missing"] = outcome(os.rename, f"{r}/missing", f"{r}/m2")
        o["rename into missing dir"] = outcome(os.rename, f"{r}/f", f"{r}/missing/f")
        o["rename below file"] = outcome(os.rename, f"{r}/d", f"{r}/f/d")
        o["rename dir into itself"] = outcome(os.rename, f"{r}/d", f"{r}/d/sub")
        o["rename dir onto itself"] = outcome(os.rename, f"{r}/d", f"{r}/d")
        o["rename ."] = outcome(os.rename, f"{r}/d/.", f"{r}/dot")
        o["rename .."] = outcome(os.rename, f"{r}/d/..", f"{r}/dotdot")
        o["rename onto ."] = outcome(os.rename, f"{r}/f", f"{r}/d/.")
        o["rename dir onto file"] = outcome(os.rename, f"{r}/d", f"{r}/f")
        o["rename file onto dir"] = outcome(os.rename, f"{r}/f", f"{r}/d")
        o["rename dir onto non-empty"] = outcome(os.rename, f"{r}/d", f"{r}/full")
        o["rename file trailing slash"] = outcome(os.rename, f"{r}/f", f"{r}/g/")
        return o

    remote, local = workdirs.pair("errors")
    same(remote, local, scenario)
    assert tree(remote) == tree(local)


def test_name_and_path_length(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> dict[str, str]:
        r = str(root)
        longest, too_long = "n" * NAME_MAX, "n" * (NAME_MAX + 1)
        os.mkdir(f"{r}/d")
        o: dict[str, str] = {}
        o["create 255"] = outcome(os.mknod, f"{r}/{longest}")
        o["stat 255"] = outcome(os.stat, f"{r}/{longest}")
        o["create 256"] = outcome(os.open, f"{r}/{too_long}", os.O_CREAT | os.O_WRONLY)
        o["mkdir 256"] = outcome(os.mkdir, f"{r}/{too_long}")
        o["stat 256"] = outcome(os.stat, f"{r}/{too_long}")
        o["mknod 256"] = outcome(os.mknod, f"{r}/{too_long}")
        o["symlink 256"] = outcome(os.symlink, "t", f"{r}/{too_long}")
        o["link 256"] = outcome(os.link, f"{r}/{longest}", f"{r}/{too_long}")
        o["rename to 256"] = outcome(os.rename, f"{r}/{longest}", f"{r}/{too_long}")
        o["unlink 256"] = outcome(os.unlink, f"{r}/{too_long}")
        o["name of 1000"] = outcome(os.stat, f"{r}/{'m' * 1000}")
        o["name of 2000"] = outcome(os.stat, f"{r}/{'m' * 2000}")
        # a path of PATH_MAX bytes or more (with its NUL) is refused before any lookup
        pad = "./" * ((PATH_MAX - len(r)) // 2 + 1)
        o["path over PATH_MAX"] = outcome(os.stat, f"{r}/{pad}d")
        fits = "./" * ((PATH_MAX - len(r) - 8) // 2)
        o["path under PATH_MAX"] = outcome(os.stat, f"{r}/{fits}d")
        return o

    remote, local = workdirs.pair("lengths")
    out = same(remote, local, scenario)
    assert out["create 256"] == "ENAMETOOLONG" and out["path over PATH_MAX"] == "ENAMETOOLONG"
    assert tree(remote) == tree(local)


def test_symlink_loops_and_nofollow(workdirs: Workdirs) -> None:
    def scenario(root: Path) -> dict[str, str]:
        _fixture(root)
        r = str(root)
        o: dict[str, str] = {}
        o["open loop"] = outcome(os.open, f"{r}/loop_a", os.O_RDONLY)
        o["stat loop"] = outcome(os.stat, f"{r}/loop_a")
        o["lstat loop"] = outcome(os.lstat, f"{r}/loop_a")
        o["path through loop"] = outcome(os.stat, f"{r}/loop_a/x")
        o["create through loop"] = outcome(os.open, f"{r}/loop_a", os.O_CREAT | os.O_WRONLY)
        o["O_NOFOLLOW symlink"] = outcome(os.open, f"{r}/s", os.O_RDONLY | os.O_NOFOLLOW)
        o["O_NOFOLLOW file"] = outcome(os.open, f"{r}/f", os.O_RDONLY | os.O_NOFOLLOW)
        o["O_NOFOLLOW dangling"] = outcome(
            os.open, f"{r}/dangling", os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW
        )
        o["chmod through dangling"] = outcome(os.chmod, f"{r}/dangling", 0o600)
        # 40 links in a chain is Linux's limit: 41 is a loop
        for i in range(45):
            os.symlink(f"c{i + 1}", f"{r}/c{i}")
        (root / "c45").write_bytes(b"end")
        o["chain of 45"] = outcome(os.stat, f"{r}/c0")
        o["chain of 40"] = outcome(os.stat, f"{r}/c5")
        o["chain of 39"] = outcome(os.stat, f"{r}/c6")
        return o

    remote, local = workdirs.pair("loops")
    out = same(remote, local, scenario)
    assert out["open loop"] == "ELOOP" and out["O_NOFOLLOW symlink"] == "ELOOP"


def test_exdev_between_mount_and_local(grid: Grid, workdirs: Workdirs) -> None:
    remote, local = workdirs.pair("exdev")
    (remote / "f").write_bytes(b"r")
    (local / "g").write_bytes(b"l")
    assert outcome(os.rename, remote / "f", local / "f") == "EXDEV"
    assert outcome(os.rename, local / "g", remote / "g") == "EXDEV"
    assert outcome(os.link, remote / "f", local / "f") == "EXDEV"
    assert outcome(os.link, local / "g", remote / "g") == "EXDEV"
    assert sorted(os.listdir(remote)) == ["f"] and sorted(os.listdir(local)) == ["g"]
