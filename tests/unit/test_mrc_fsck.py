"""fsck of the MRC store: a healthy store passes, and each invariant broken by hand
(through a raw connection without foreign keys) is reported."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from xfs.mrc import fsck
from xfs.mrc.namespace import Namespace
from xfs.mrc.store import Store, add_functions
from xfs.proto.records import ROOT_INO, Identity, Kind, Replica, Role, StripingPolicy, XLocSet

ALICE = Identity(
    "alice@physics", "physics", Kind.USER, Role.STANDARD, ("users@physics",), b"\0" * 32
)
XLOC = XLocSet(version=1, replicas=[Replica(osds=["osd-1"], striping=StripingPolicy())])


class World:
    """A store with a small tree, and a raw connection to break it with."""

    def __init__(self, path: Path) -> None:
        self.store = Store.open(path)
        ns = Namespace(self.store)
        self.vid = ns.create_volume(ALICE, "v").id
        self.dir = ns.mkdir(ALICE, "v", ROOT_INO, b"d", 0o755, 0).ino
        self.sub = ns.mkdir(ALICE, "v", self.dir, b"sub", 0o755, 0).ino
        self.file = ns.create(ALICE, "v", self.dir, b"f", 0o644, os.O_CREAT, 0, XLOC)[0].ino
        ns.link(ALICE, "v", self.file, ROOT_INO, b"f2")
        self.link = ns.symlink(ALICE, "v", ROOT_INO, b"l", b"d/f").ino
        ns.setxattr(ALICE, "v", self.file, b"user.a", b"1")
        self.gone = ns.create(ALICE, "v", ROOT_INO, b"g", 0o644, os.O_CREAT, 0, XLOC)[0].ino
        ns.unlink(ALICE, "v", ROOT_INO, b"g")  # a pending deletion
        self.raw = sqlite3.connect(path, isolation_level=None)
        add_functions(self.raw)

    def sql(self, query: str, *args: object) -> None:
        self.raw.execute(query, args)

    def problems(self) -> list[str]:
        return fsck.check(self.store)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "mrc.db")
    yield w
    w.raw.close()
    w.store.close()


def one(world: World, *fragments: str) -> None:
    problems = world.problems()
    assert problems, "fsck found nothing"
    for fragment in fragments:
        assert any(fragment in p for p in problems), problems


def test_healthy(world: World) -> None:
    assert world.problems() == []


def test_every_invariant_has_a_method() -> None:
    checks = [n for n in dir(fsck.Fsck) if n.startswith("check_")]
    assert len(checks) >= 14


def test_format_version(world: World) -> None:
    world.sql("UPDATE meta SET value = 8 WHERE key = 'format_version'")
    one(world, "format_version is 8")


def test_missing_root(world: World) -> None:
    world.sql("UPDATE inodes SET mode = ? WHERE ino = ?", stat.S_IFREG | 0o644, ROOT_INO)
    one(world, "no root directory")


def test_inode_without_volume(world: World) -> None:
    world.sql("UPDATE inodes SET volume = 'nope' WHERE ino = ?", world.link)
    one(world, "belongs to no volume")


def test_dentry_to_missing_inode(world: World) -> None:
    world.sql("UPDATE dentries SET ino = 999 WHERE name = ?", b"l")
    one(world, "names missing inode 999", "dangling reference")


def test_dentry_in_a_file(world: World) -> None:
    world.sql("UPDATE dentries SET parent = ? WHERE name = ?", world.file, b"l")
    one(world, "parent is not a directory")


def test_file_nlink(world: World) -> None:
    world.sql("UPDATE inodes SET nlink = 1 WHERE ino = ?", world.file)
    one(world, f":{world.file}: nlink 1, 2 entries")


def test_dir_nlink(world: World) -> None:
    world.sql("UPDATE inodes SET nlink = 2 WHERE ino = ?", world.dir)
    one(world, f":{world.dir}: nlink 2, expected 3")


def test_dir_with_two_entries(world: World) -> None:
    world.sql(
        "INSERT INTO dentries VALUES (?, ?, ?, ?, 1000)", world.vid, ROOT_INO, b"d2", world.sub
    )
    one(world, f":{world.sub} has 2 entries naming it")


def test_unreachable(world: World) -> None:
    # a directory cycle cut off from the root: sub becomes d's parent
    world.sql("UPDATE dentries SET parent = ? WHERE name = ?", world.sub, b"d")
    one(world, f":{world.dir} is not reachable", f":{world.sub} is not reachable")


def test_orphan_inode(world: World) -> None:
    world.sql("DELETE FROM dentries WHERE name = ?", b"l")
    one(world, f":{world.link} is not reachable", "nlink 1, 0 entries")


def test_next_ino(world: World) -> None:
    world.sql("UPDATE volumes SET next_ino = ?", world.link)
    one(world, f"inode {world.link} >= next_ino {world.link}")


def test_cursor_range(world: World) -> None:
    world.sql("UPDATE meta SET value = 2 WHERE key = 'next_cursor'")
    one(world, "out of range (next_cursor 2)")


def test_cursor_duplicate(world: World) -> None:
    # the schema forbids it: copy the table without its UNIQUE constraint
    world.raw.executescript(
        "CREATE TABLE copy AS SELECT * FROM dentries; DROP TABLE dentries; "
        "ALTER TABLE copy RENAME TO dentries;"
    )
    world.sql("UPDATE dentries SET cursor = 1")
    one(world, "cursor 1 is used by 5 entries")


def test_bad_xloc(world: World) -> None:
    world.sql("UPDATE inodes SET xloc = ? WHERE ino = ?", b"\xc1junk", world.file)
    one(world, f":{world.file}: bad xloc")
    world.sql("UPDATE inodes SET xloc = ? WHERE ino = ?", b"\x80", world.file)
    one(world, "bad xloc (")
    world.sql("UPDATE pending_deletions SET xloc = ?", b"\x01")
    one(world, "pending deletion")


def test_xloc_on_directory(world: World) -> None:
    world.sql(
        "UPDATE inodes SET xloc = (SELECT xloc FROM inodes WHERE ino = ?) WHERE ino = ?",
        world.file,
        world.dir,
    )
    one(world, "xloc on a non-regular file")


def test_symlink_without_target(world: World) -> None:
    world.sql("UPDATE inodes SET target = NULL WHERE ino = ?", world.link)
    one(world, f":{world.link}: symlink")
    world.sql("UPDATE inodes SET target = ? WHERE ino = ?", b"x", world.link)
    one(world, f":{world.link}: symlink")  # size no longer matches


def test_foreign_keys(world: World) -> None:
    world.sql("INSERT INTO xattrs VALUES (?, 999, ?, ?)", world.vid, b"user.x", b"")
    one(world, "xattrs row")


# ---------------------------------------------------------------------- repair
def test_repair_sets_right_what_a_rule_can(world: World) -> None:
    """``xfs fsck --repair``: each repairable invariant broken at once, then repaired
    in one transaction; fsck is clean afterwards."""
    from xfs.mrc import repair

    w = world
    w.sql("UPDATE inodes SET nlink = 7 WHERE volume = ? AND ino = ?", w.vid, w.file)
    w.sql("UPDATE inodes SET nlink = 9 WHERE volume = ? AND ino = ?", w.vid, w.dir)
    w.sql("INSERT INTO dentries (volume, parent, name, ino, cursor) "
          "VALUES (?, ?, ?, 999, 99999)", w.vid, ROOT_INO, b"dangling")
    w.sql("UPDATE volumes SET next_ino = 2 WHERE id = ?", w.vid)
    w.sql("DELETE FROM dentries WHERE volume = ? AND ino = ?", w.vid, w.link)  # symlink's name
    assert len(w.problems()) >= 5
    before = w.raw.execute("SELECT count(*) FROM pending_deletions").fetchone()[0]
    done = repair.repair(w.raw)
    assert any("removed entry" in d and "dangling" in d for d in done)
    assert any(f"set nlink of {w.vid}:{w.file} to 2" == d for d in done)
    assert any(f"set nlink of {w.vid}:{w.dir} to 3" == d for d in done)
    assert any(f"freed {w.vid}:{w.link}" in d for d in done)  # no name left, open nowhere
    assert any("raised next_ino" in d for d in done)
    assert w.problems() == []
    assert w.raw.execute("SELECT count(*) FROM pending_deletions").fetchone()[0] == before


def test_repair_leaves_alone_what_it_cannot_judge(world: World) -> None:
    from xfs.mrc import repair

    w = world  # a directory moved out of the tree: unreachable, still named
    w.sql("UPDATE dentries SET parent = ? WHERE volume = ? AND ino = ?", w.sub, w.vid, w.dir)
    repair.repair(w.raw)
    assert any("not reachable from the root" in p for p in w.problems())
