"""Tests of the MRC namespace (xfs.mrc.namespace) over a real SQLite store.

Every test ends with fsck of the store (the ``ns`` fixture), the oracle of its invariants.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit.mrc_world import ALICE, BOB, CAROL, ROOT, V, fsck_checked_store, ident, raises
from xfs.mrc import acl as acls
from xfs.mrc import fsck, namespace
from xfs.mrc.namespace import RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, Namespace
from xfs.mrc.perms import R_OK, W_OK, X_OK
from xfs.mrc.sql import MetaStore
from xfs.mrc.store import FORMAT_VERSION, Store, StoreError
from xfs.mrc.xattrs import XATTR_CREATE, XATTR_REPLACE
from xfs.proto.records import (
    ROOT_INO,
    Attr,
    Identity,
    Kind,
    Replica,
    Role,
    StripingPolicy,
    XLocSet,
)


def xloc(osd: str = "osd-1", version: int = 1) -> XLocSet:
    return XLocSet(version=version, replicas=[Replica(osds=[osd], striping=StripingPolicy())])


class FakeClock:
    """Nanoseconds that move by 1000 on every reading."""

    def __init__(self) -> None:
        self.t = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        self.t += 1000
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(store_spec: str | Path, clock: FakeClock) -> Iterator[MetaStore]:
    yield from fsck_checked_store(store_spec, clock)


@pytest.fixture
def ns(store: Store) -> Namespace:
    n = Namespace(store)
    n.create_volume(ROOT, V, owner="alice@physics", group="users@physics", mode=0o777,
                    striping=StripingPolicy(stripe_size=1 << 16, width=2))
    return n


def mkfile(ns: Namespace, name: bytes, who: Identity = ALICE, parent: int = ROOT_INO,
           mode: int = 0o644) -> Attr:
    return ns.create(who, V, parent, name, mode, os.O_WRONLY | os.O_CREAT, 0, xloc())[0]


def mkdir(ns: Namespace, name: bytes, who: Identity = ALICE, parent: int = ROOT_INO,
          mode: int = 0o755) -> Attr:
    return ns.mkdir(who, V, parent, name, mode, 0)


def names(ns: Namespace, ino: int = ROOT_INO, who: Identity = ALICE) -> list[bytes]:
    return [e.name for e in ns.readdir(who, V, ino, 0, 10_000)]


# ============================================================================ store
def test_store_pragmas_and_version(store: MetaStore) -> None:
    with store.read() as cur:
        if isinstance(store, Store):
            assert cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert cur.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: group commit
            assert cur.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert cur.execute(
            "SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0] == FORMAT_VERSION



def test_store_counts_commits_and_syncs_its_journal(store: Store) -> None:
    before = store.commits
    with store.transaction() as cur:
        cur.execute("UPDATE meta SET value = value WHERE key = 'format_version'")
    with store.read() as cur:
        cur.execute("SELECT 1")
    assert store.commits == before + 1  # reads are not commits
    with pytest.raises(ZeroDivisionError), store.transaction():
        1 / 0  # noqa: B018
    assert store.commits == before + 1  # nor is a rollback
    store.sync()  # (an fsync of the WAL; nothing to see but that it works)

def test_store_refuses_other_format_version(tmp_path: Path) -> None:
    Store.open(tmp_path / "db").close()
    with sqlite3.connect(tmp_path / "db") as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'",
                     (FORMAT_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match=f"format version {FORMAT_VERSION + 1}"):
        Store.open(tmp_path / "db")


def test_store_refuses_foreign_files(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="not an MRC store"):
        Store.open(tmp_path / "other.db")
    (tmp_path / "junk").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not an MRC store"):
        Store.open(tmp_path / "junk")


def test_transaction_rolls_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as cur:
        cur.execute("INSERT INTO meta VALUES ('x', 1)")
        raise RuntimeError
    with store.read() as cur:
        assert cur.execute("SELECT count(*) FROM meta WHERE key = 'x'").fetchone()[0] == 0


def test_mutations_are_committed_and_survive_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "mrc.db"
    with Store.open(path, clock) as s:
        n = Namespace(s)
        n.create_volume(ALICE, V, mode=0o755)
        d = mkdir(n, b"d")
        f = mkfile(n, b"f", parent=d.ino)
        n.setxattr(ALICE, V, f.ino, b"user.k", b"v")
        # committed: an independent connection sees it before the store is closed
        other = sqlite3.connect(path)
        assert other.execute("SELECT count(*) FROM dentries").fetchone()[0] == 2
        other.close()
        before = n.readdir(ALICE, V, d.ino, 0, 10)
        f = n.getattr(ALICE, V, f.ino)
    with Store.open(path, clock) as s:
        n = Namespace(s)
        assert n.readdir(ALICE, V, d.ino, 0, 10) == before
        assert n.getxattr(ALICE, V, f.ino, b"user.k") == b"v"
        assert n.lookup(ALICE, V, d.ino, b"f") == f
        g = mkfile(n, b"g")
        assert g.ino > f.ino
        assert fsck.check(s) == []


# ========================================================================== volumes
def test_create_volume_and_root(ns: Namespace) -> None:
    info = ns.create_volume(ALICE, "home", mode=0o750)
    assert (info.owner, info.group, info.mode, info.files) == (
        "alice@physics", "users@physics", 0o750, 1)
    assert info.striping == StripingPolicy()
    root = ns.getattr(ALICE, "home", ROOT_INO)
    assert root.mode == stat.S_IFDIR | 0o750
    assert (root.nlink, root.owner, root.group, root.blksize) == (
        2, "alice@physics", "users@physics", 1 << 20)
    assert ns.get_volume("home") == info
    nogroup = Identity("x@physics", "physics", Kind.USER, Role.SUPER, (), b"")
    assert ns.create_volume(nogroup, "v2", owner="eve@physics").group == "eve@physics"
    assert ns.create_volume(nogroup, "v3", owner="", group="").group == "x@physics"


@pytest.mark.parametrize("name", ["", "-a", ".a", "a/b", "a b", "é", "a" * 65])
def test_volume_name_invalid(ns: Namespace, name: str) -> None:
    raises(errno.EINVAL, ns.create_volume, ROOT, name)


@pytest.mark.parametrize("name", ["a", "A.b_c-1", "9" + "a" * 63])
def test_volume_name_valid(ns: Namespace, name: str) -> None:
    assert ns.create_volume(ROOT, name).name == name


@pytest.mark.parametrize("striping", [StripingPolicy(0, 1), StripingPolicy(1000, 1),
                                      StripingPolicy(128 << 20, 1), StripingPolicy(4096, 0)])
def test_volume_bad_striping(ns: Namespace, striping: StripingPolicy) -> None:
    raises(errno.EINVAL, ns.create_volume, ROOT, "s", striping=striping)


def test_volume_errors(ns: Namespace) -> None:
    raises(errno.EEXIST, ns.create_volume, ROOT, V)
    raises(errno.ENOENT, ns.get_volume, "nope")
    raises(errno.ENOENT, ns.delete_volume, ROOT, "nope")
    raises(errno.ENOENT, ns.getattr, ALICE, "nope", ROOT_INO)
    raises(errno.ENOENT, ns.statfs_counts, "nope")


def test_list_volumes_and_counts(ns: Namespace) -> None:
    ns.create_volume(ROOT, "empty")
    f = mkfile(ns, b"f")
    ns.update_size(ALICE, V, f.ino, 1000)
    g = mkfile(ns, b"g")
    ns.update_size(ALICE, V, g.ino, 24)
    mkdir(ns, b"d")
    ns.symlink(ALICE, V, ROOT_INO, b"l", b"target")
    assert ns.statfs_counts(V) == (5, 1024)
    vols = {v.name: v for v in ns.list_volumes()}
    assert list(vols) == ["empty", V]
    assert (vols[V].files, vols[V].bytes_used) == (5, 1024)
    assert (vols["empty"].files, vols["empty"].bytes_used) == (1, 0)
    assert ns.get_volume(V) == vols[V]


def test_delete_volume_queues_its_files(ns: Namespace) -> None:
    ns.create_volume(ROOT, "keep", mode=0o777)
    ns.create(ALICE, "keep", ROOT_INO, b"k", 0o644, os.O_CREAT, 0, xloc("osd-k"))
    d = mkdir(ns, b"d")
    a = mkfile(ns, b"a", parent=d.ino)
    ns.link(ALICE, V, a.ino, ROOT_INO, b"a2")
    b = mkfile(ns, b"b")
    ns.setxattr(ALICE, V, b.ino, b"user.x", b"1")
    ns.mknod(ALICE, V, ROOT_INO, b"fifo", stat.S_IFIFO | 0o644, 0, 0)
    vid = ns.get_volume(V).id
    ns.delete_volume(ROOT, V)
    raises(errno.ENOENT, ns.get_volume, V)
    pending = ns.pending_deletions(10)
    assert [(v, ino) for _, v, ino, _ in pending] == [(vid, a.ino), (vid, b.ino)]
    assert pending[0][3] == xloc()
    assert [v.name for v in ns.list_volumes()] == ["keep"]
    # the name can be used again, with a fresh namespace
    ns.create_volume(ROOT, V)
    assert names(ns) == []


def test_pending_deletions_queue(ns: Namespace) -> None:
    for i in range(5):
        mkfile(ns, b"f%d" % i)
        assert ns.unlink(ALICE, V, ROOT_INO, b"f%d" % i) is not None
    first = ns.pending_deletions(3)
    assert len(first) == 3
    ns.deletions_done([first[0][0]])
    ns.deletions_done([first[0][0]])  # idempotent
    rest = ns.pending_deletions(10)
    assert [p[0] for p in rest] == [p[0] for p in first[1:]] + [
        p[0] for p in rest[2:]]
    assert len(rest) == 4
    assert ns.pending_deletions(0) == []


# ========================================================================= lookups
def test_lookup_and_getattr(ns: Namespace) -> None:
    d = mkdir(ns, b"d")
    f = mkfile(ns, b"f", parent=d.ino)
    assert ns.lookup(CAROL, V, d.ino, b"f") == f == ns.getattr(CAROL, V, f.ino)
    assert f.blksize == 1 << 16
    assert ns.lookup(CAROL, V, d.ino, b".") == ns.getattr(ALICE, V, d.ino)
    assert ns.lookup(CAROL, V, d.ino, b"..").ino == ROOT_INO
    assert ns.lookup(CAROL, V, ROOT_INO, b"..").ino == ROOT_INO
    raises(errno.ENOENT, ns.lookup, ALICE, V, d.ino, b"nope")
    raises(errno.ENOTDIR, ns.lookup, ALICE, V, f.ino, b"x")
    raises(errno.ESTALE, ns.lookup, ALICE, V, 999, b"x")
    raises(errno.ESTALE, ns.getattr, ALICE, V, 999)
    raises(errno.ENAMETOOLONG, ns.lookup, ALICE, V, d.ino, b"x" * 256)
    raises(errno.EINVAL, ns.lookup, ALICE, V, d.ino, b"a/b")
    ns.setattr(ALICE, V, d.ino, mode=0o766)  # no search for others
    raises(errno.EACCES, ns.lookup, CAROL, V, d.ino, b"f")
    raises(errno.EACCES, ns.lookup, BOB, V, d.ino, b"f")
    assert ns.lookup(ALICE, V, d.ino, b"f") == f
    assert ns.lookup(ROOT, V, d.ino, b"f") == f


def test_access(ns: Namespace) -> None:
    f = mkfile(ns, b"f", mode=0o640)
    ns.access(ALICE, V, f.ino, R_OK | W_OK)
    ns.access(BOB, V, f.ino, R_OK)
    ns.access(CAROL, V, f.ino, 0)
    raises(errno.EACCES, ns.access, BOB, V, f.ino, W_OK)
    raises(errno.EACCES, ns.access, CAROL, V, f.ino, R_OK)
    raises(errno.EACCES, ns.access, ALICE, V, f.ino, X_OK)
    raises(errno.EACCES, ns.access, ROOT, V, f.ino, X_OK)
    ns.access(ROOT, V, f.ino, R_OK | W_OK)
    raises(errno.EINVAL, ns.access, ALICE, V, f.ino, 8)
    raises(errno.ESTALE, ns.access, ALICE, V, 999, 0)


# ======================================================================== creation
@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b"])
def test_invalid_names(ns: Namespace, name: bytes) -> None:
    f = mkfile(ns, b"f")
    raises(errno.EINVAL, ns.mknod, ALICE, V, ROOT_INO, name, 0o644, 0, 0)
    raises(errno.EINVAL, ns.mkdir, ALICE, V, ROOT_INO, name, 0o755, 0)
    raises(errno.EINVAL, ns.create, ALICE, V, ROOT_INO, name, 0o644, os.O_CREAT, 0, xloc())
    raises(errno.EINVAL, ns.symlink, ALICE, V, ROOT_INO, name, b"t")
    raises(errno.EINVAL, ns.link, ALICE, V, f.ino, ROOT_INO, name)
    raises(errno.EINVAL, ns.unlink, ALICE, V, ROOT_INO, name)
    raises(errno.EINVAL, ns.rmdir, ALICE, V, ROOT_INO, name)
    raises(errno.EINVAL, ns.rename, ALICE, V, ROOT_INO, name, ROOT_INO, b"x")
    raises(errno.EINVAL, ns.rename, ALICE, V, ROOT_INO, b"f", ROOT_INO, name)


def test_name_length(ns: Namespace) -> None:
    mkfile(ns, b"x" * 255)
    raises(errno.ENAMETOOLONG, ns.mkdir, ALICE, V, ROOT_INO, b"y" * 256, 0o755, 0)
    raises(errno.ENAMETOOLONG, ns.mknod, ALICE, V, ROOT_INO, b"y" * 256, 0o644, 0, 0)
    raises(errno.ENAMETOOLONG, ns.rename, ALICE, V, ROOT_INO, b"x" * 255, ROOT_INO, b"y" * 256)


def test_mknod_types(ns: Namespace, clock: FakeClock) -> None:
    before = clock.t
    reg = ns.mknod(ALICE, V, ROOT_INO, b"reg", 0o666, 5, 0o022)
    assert (reg.mode, reg.nlink, reg.rdev, reg.size) == (stat.S_IFREG | 0o644, 1, 0, 0)
    assert (reg.owner, reg.group) == ("alice@physics", "users@physics")
    assert reg.atime_ns == reg.mtime_ns == reg.ctime_ns > before
    assert ns.open(ALICE, V, reg.ino, os.O_RDONLY)[1] is None  # no layout
    fifo = ns.mknod(ALICE, V, ROOT_INO, b"fifo", stat.S_IFIFO | 0o600, 0, 0)
    sock = ns.mknod(ALICE, V, ROOT_INO, b"sock", stat.S_IFSOCK | 0o600, 0, 0)
    assert stat.S_ISFIFO(fifo.mode) and stat.S_ISSOCK(sock.mode)
    raises(errno.EPERM, ns.mknod, ALICE, V, ROOT_INO, b"dev", stat.S_IFCHR | 0o600, 0x0501, 0)
    raises(errno.EPERM, ns.mknod, ALICE, V, ROOT_INO, b"dev", stat.S_IFBLK | 0o600, 0x0801, 0)
    dev = ns.mknod(ROOT, V, ROOT_INO, b"dev", stat.S_IFCHR | 0o600, 0x0501, 0)
    assert (stat.S_ISCHR(dev.mode), dev.rdev) == (True, 0x0501)
    raises(errno.EPERM, ns.mknod, ALICE, V, ROOT_INO, b"d", stat.S_IFDIR | 0o755, 0, 0)
    raises(errno.EINVAL, ns.mknod, ALICE, V, ROOT_INO, b"l", stat.S_IFLNK | 0o777, 0, 0)
    raises(errno.EEXIST, ns.mknod, ALICE, V, ROOT_INO, b"reg", 0o644, 0, 0)
    root = ns.getattr(ALICE, V, ROOT_INO)
    assert root.mtime_ns == root.ctime_ns == dev.ctime_ns
    assert root.nlink == 2


def test_mkdir(ns: Namespace) -> None:
    d = ns.mkdir(ALICE, V, ROOT_INO, b"d", 0o777, 0o027)
    assert (d.mode, d.nlink) == (stat.S_IFDIR | 0o750, 2)
    e = mkdir(ns, b"e", parent=d.ino)
    assert ns.getattr(ALICE, V, d.ino).nlink == 3
    assert ns.getattr(ALICE, V, ROOT_INO).nlink == 3
    assert ns.getattr(ALICE, V, d.ino).mtime_ns == e.ctime_ns
    raises(errno.EEXIST, ns.mkdir, ALICE, V, ROOT_INO, b"d", 0o755, 0)
    raises(errno.ENOTDIR, ns.mkdir, ALICE, V, mkfile(ns, b"f").ino, b"x", 0o755, 0)
    raises(errno.ESTALE, ns.mkdir, ALICE, V, 999, b"x", 0o755, 0)


def test_create_needs_write_and_search_on_parent(ns: Namespace) -> None:
    d = mkdir(ns, b"d", mode=0o775)
    mkfile(ns, b"f", who=BOB, parent=d.ino, mode=0o666)  # (a safe hard-link source)
    who = CAROL
    if True:
        for op in (
            lambda: ns.mkdir(who, V, d.ino, b"x", 0o755, 0),
            lambda: ns.mknod(who, V, d.ino, b"x", 0o644, 0, 0),
            lambda: ns.create(who, V, d.ino, b"x", 0o644, os.O_CREAT, 0, xloc()),
            lambda: ns.symlink(who, V, d.ino, b"x", b"t"),
            lambda: ns.link(who, V, d.ino + 1, d.ino, b"x"),
        ):
            raises(errno.EACCES, op)
    # EEXIST wins over EACCES for a missing W, not over a missing search
    raises(errno.EEXIST, ns.mkdir, CAROL, V, d.ino, b"f", 0o755, 0)
    ns.setattr(ALICE, V, d.ino, mode=0o774)
    raises(errno.EACCES, ns.mkdir, CAROL, V, d.ino, b"f", 0o755, 0)
    raises(errno.EEXIST, ns.mkdir, BOB, V, d.ino, b"f", 0o755, 0)  # group rwx
    mkdir(ns, b"ok", who=ROOT, parent=d.ino)


def test_new_entries_groups(ns: Namespace) -> None:
    nogroups = ident("dave@physics")
    assert mkfile(ns, b"a", who=nogroups).group == "dave@physics"
    assert mkfile(ns, b"b", who=CAROL).group == "others@physics"
    sg = ns.mkdir(ALICE, V, ROOT_INO, b"sg", 0o2777, 0)
    ns.setattr(ALICE, V, sg.ino, group="alice@physics")
    f = mkfile(ns, b"f", who=CAROL, parent=sg.ino)
    sub = mkdir(ns, b"sub", who=CAROL, parent=sg.ino)
    link = ns.symlink(CAROL, V, sg.ino, b"l", b"t")
    assert f.group == sub.group == link.group == "alice@physics"
    assert sub.mode == stat.S_IFDIR | 0o2755
    assert f.mode == stat.S_IFREG | 0o644
    assert mkfile(ns, b"g", who=CAROL, parent=sub.ino).group == "alice@physics"
    # a non-member's group-executable setgid request is stripped
    x = ns.create(CAROL, V, sg.ino, b"x", 0o2755, os.O_CREAT, 0, xloc())[0]
    assert x.mode == stat.S_IFREG | 0o755


def test_create_new_and_existing(ns: Namespace, clock: FakeClock) -> None:
    attr, loc, epoch = ns.create(BOB, V, ROOT_INO, b"f", 0o666, os.O_CREAT | os.O_RDWR,
                                 0o022, xloc("osd-a"))
    assert (attr.mode, attr.nlink, attr.owner, loc, epoch) == (
        stat.S_IFREG | 0o644, 1, "bob@physics", xloc("osd-a"), 0)
    assert ns.open(BOB, V, attr.ino, os.O_RDONLY) == (attr, xloc("osd-a"), 0)
    raises(errno.EEXIST, ns.create, BOB, V, ROOT_INO, b"f", 0o644,
           os.O_CREAT | os.O_EXCL, 0, xloc())
    # existing: like open; the stored layout wins over the offered one
    assert ns.create(BOB, V, ROOT_INO, b"f", 0o600, os.O_CREAT | os.O_WRONLY, 0,
                     xloc("osd-b")) == (attr, xloc("osd-a"), 0)
    ns.update_size(BOB, V, attr.ino, 100)
    a2, loc2, epoch2 = ns.create(BOB, V, ROOT_INO, b"f", 0o600,
                                 os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0, xloc("osd-b"))
    assert (a2.size, loc2, epoch2, a2.mtime_ns) == (0, xloc("osd-a"), 1, clock.t)
    raises(errno.EACCES, ns.create, CAROL, V, ROOT_INO, b"f", 0o644, os.O_CREAT | os.O_RDWR,
           0, xloc())
    mkdir(ns, b"d")
    raises(errno.EISDIR, ns.create, BOB, V, ROOT_INO, b"d", 0o644, os.O_CREAT, 0, xloc())
    raises(errno.EEXIST, ns.create, BOB, V, ROOT_INO, b"d", 0o644, os.O_CREAT | os.O_EXCL,
           0, xloc())
    ns.mknod(ALICE, V, ROOT_INO, b"fifo", stat.S_IFIFO | 0o666, 0, 0)
    raises(errno.EEXIST, ns.create, BOB, V, ROOT_INO, b"fifo", 0o644, os.O_CREAT, 0, xloc())
    raises(errno.EINVAL, ns.create, BOB, V, ROOT_INO, b"g", stat.S_IFDIR | 0o755, os.O_CREAT,
           0, xloc())
    # a file made by mknod gets the offered layout when created over
    m = ns.mknod(ALICE, V, ROOT_INO, b"m", 0o644, 0, 0)
    assert ns.create(ALICE, V, ROOT_INO, b"m", 0o644, os.O_CREAT, 0, xloc("c"))[1] == xloc("c")
    assert ns.open(ALICE, V, m.ino, os.O_RDONLY)[1] == xloc("c")


# ============================================================================ open
@pytest.mark.parametrize(
    ("flags", "mode", "who", "code"),
    [
        (os.O_RDONLY, 0o640, BOB, None),
        (os.O_WRONLY, 0o640, BOB, errno.EACCES),
        (os.O_RDWR, 0o660, BOB, None),
        (os.O_RDWR, 0o640, BOB, errno.EACCES),
        (os.O_RDONLY, 0o640, CAROL, errno.EACCES),
        (os.O_WRONLY, 0o602, CAROL, None),
        (os.O_RDONLY | os.O_TRUNC, 0o644, BOB, errno.EACCES),
        (os.O_RDWR, 0o000, ROOT, None),
        (os.O_RDONLY, 0o000, ALICE, errno.EACCES),
        (os.O_ACCMODE, 0o777, ALICE, errno.EINVAL),
        (os.O_RDONLY | os.O_DIRECTORY, 0o777, ALICE, errno.ENOTDIR),
    ],
)
def test_open_permissions(ns: Namespace, flags: int, mode: int, who: Identity,
                          code: int | None) -> None:
    f = mkfile(ns, b"f", mode=mode)
    if code is None:
        assert ns.open(who, V, f.ino, flags) == (f, xloc(), 0)
    else:
        raises(code, ns.open, who, V, f.ino, flags)


def test_open_special_cases(ns: Namespace, clock: FakeClock) -> None:
    d = mkdir(ns, b"d")
    assert ns.open(ALICE, V, d.ino, os.O_RDONLY | os.O_DIRECTORY) == (d, None, 0)
    raises(errno.EISDIR, ns.open, ALICE, V, d.ino, os.O_WRONLY)
    raises(errno.EISDIR, ns.open, ALICE, V, d.ino, os.O_RDONLY | os.O_TRUNC)
    link = ns.symlink(ALICE, V, ROOT_INO, b"l", b"d")
    raises(errno.ELOOP, ns.open, ALICE, V, link.ino, os.O_RDONLY)
    raises(errno.ESTALE, ns.open, ALICE, V, 999, os.O_RDONLY)
    f = mkfile(ns, b"f")
    ns.update_size(ALICE, V, f.ino, 4096)
    a, loc, epoch = ns.open(ALICE, V, f.ino, os.O_RDWR | os.O_TRUNC)
    assert (a.size, loc, epoch, a.mtime_ns, a.ctime_ns) == (0, xloc(), 1, clock.t, clock.t)
    assert ns.open(ALICE, V, f.ino, os.O_WRONLY | os.O_TRUNC)[2] == 2
    fifo = ns.mknod(ALICE, V, ROOT_INO, b"p", stat.S_IFIFO | 0o644, 0, 0)
    assert ns.open(ALICE, V, fifo.ino, os.O_WRONLY | os.O_TRUNC) == (fifo, None, 0)


# ========================================================================= setattr
def test_chmod(ns: Namespace, clock: FakeClock) -> None:
    f = mkfile(ns, b"f")
    a, loc = ns.setattr(ALICE, V, f.ino, mode=0o4750)
    assert (a.mode, loc, a.ctime_ns) == (stat.S_IFREG | 0o4750, None, clock.t)
    assert a.mtime_ns == f.mtime_ns
    raises(errno.EPERM, ns.setattr, BOB, V, f.ino, mode=0o777)
    raises(errno.EPERM, ns.setattr, CAROL, V, f.ino, mode=0o777)
    assert ns.setattr(ROOT, V, f.ino, mode=stat.S_IFDIR | 0o2755)[0].mode == (
        stat.S_IFREG | 0o2755)
    # setgid in a group the caller is not in: silently dropped
    ns.setattr(ROOT, V, f.ino, group="admins@physics")
    assert ns.setattr(ALICE, V, f.ino, mode=0o2755)[0].mode == stat.S_IFREG | 0o755
    assert ns.setattr(ROOT, V, f.ino, mode=0o2755)[0].mode == stat.S_IFREG | 0o2755


def test_chown(ns: Namespace, clock: FakeClock) -> None:
    f = mkfile(ns, b"f", mode=0o6755)
    d = ns.mkdir(ALICE, V, ROOT_INO, b"d", 0o2755, 0)
    raises(errno.EPERM, ns.setattr, ALICE, V, f.ino, owner="bob@physics")
    raises(errno.EPERM, ns.setattr, BOB, V, f.ino, group="users@physics")
    raises(errno.EPERM, ns.setattr, ALICE, V, f.ino, group="others@physics")
    raises(errno.EINVAL, ns.setattr, ROOT, V, f.ino, owner="")
    a, _ = ns.setattr(ALICE, V, f.ino, group="alice@physics")
    assert (a.group, a.mode, a.ctime_ns) == ("alice@physics", stat.S_IFREG | 0o755, clock.t)
    assert ns.setattr(ALICE, V, d.ino, group="alice@physics")[0].mode == (
        stat.S_IFDIR | 0o2755)
    ns.setattr(ALICE, V, f.ino, mode=0o6755)
    a, _ = ns.setattr(ROOT, V, f.ino, owner="bob@physics", group="others@physics")
    # (as Linux: even root's chown clears S_ISUID, and S_ISGID when group-executable)
    assert (a.owner, a.group, a.mode) == ("bob@physics", "others@physics",
                                          stat.S_IFREG | 0o755)
    ns.setattr(ROOT, V, f.ino, mode=0o2745)  # S_ISGID without group-execute
    assert ns.setattr(ROOT, V, f.ino, group="users@physics")[0].mode == stat.S_IFREG | 0o2745
    # owner to itself is allowed (and still clears set-id bits)
    a, _ = ns.setattr(BOB, V, f.ino, owner="bob@physics")
    assert a.mode == stat.S_IFREG | 0o2745  # (BOB is in the group: S_ISGID stays)


def test_truncate(ns: Namespace, clock: FakeClock) -> None:
    f = mkfile(ns, b"f", mode=0o664)
    ns.update_size(ALICE, V, f.ino, 5000)
    a, loc = ns.setattr(BOB, V, f.ino, size=100)
    assert (a.size, loc, a.mtime_ns, a.ctime_ns) == (100, xloc(), clock.t, clock.t)
    assert ns.open(ALICE, V, f.ino, os.O_RDONLY)[2] == 1
    # an unchanged size still reaches the OSDs (the MRC size may lag)
    assert ns.setattr(BOB, V, f.ino, size=100)[1] == xloc()
    assert ns.open(ALICE, V, f.ino, os.O_RDONLY)[2] == 2
    assert ns.setattr(ALICE, V, f.ino, size=1 << 40)[0].size == 1 << 40
    raises(errno.EACCES, ns.setattr, CAROL, V, f.ino, size=0)
    raises(errno.EINVAL, ns.setattr, ALICE, V, f.ino, size=-1)
    raises(errno.EISDIR, ns.setattr, ALICE, V, mkdir(ns, b"d").ino, size=0)
    fifo = ns.mknod(ALICE, V, ROOT_INO, b"p", stat.S_IFIFO | 0o644, 0, 0)
    raises(errno.EINVAL, ns.setattr, ALICE, V, fifo.ino, size=0)
    m = ns.mknod(ALICE, V, ROOT_INO, b"m", 0o644, 0, 0)
    assert ns.setattr(ALICE, V, m.ino, size=10) == (ns.getattr(ALICE, V, m.ino), None)
    ns.setattr(ROOT, V, f.ino, mode=0o444)
    raises(errno.EACCES, ns.setattr, ALICE, V, f.ino, size=0)  # even the owner
    assert ns.setattr(ROOT, V, f.ino, size=0)[0].size == 0



def test_truncate_by_a_writer_needs_no_mode_bits(ns: Namespace, clock: FakeClock) -> None:
    """ftruncate(2) through a descriptor open for writing (the handler checked its
    XCap): allowed on a file of mode 0, as on Linux; by path it is not."""
    f = mkfile(ns, b"f", mode=0)
    raises(errno.EACCES, ns.setattr, ALICE, V, f.ino, size=10)
    a, loc = ns.setattr(ALICE, V, f.ino, size=10, writer=True)
    assert (a.size, loc) == (10, xloc())
    raises(errno.EACCES, ns.open, ALICE, V, f.ino, os.O_WRONLY)
    assert ns.open(ALICE, V, f.ino, os.O_WRONLY, check=False)[2] == 1  # (the epoch)


def test_chown_to_nothing_sets_ctime_alone(ns: Namespace, clock: FakeClock) -> None:
    f = mkfile(ns, b"f", mode=0o600)
    before = ns.getattr(ALICE, V, f.ino)
    a, _ = ns.setattr(CAROL, V, f.ino, ctime_now=True)  # chown(f, -1, -1): anyone
    assert a.ctime_ns == clock.t > before.ctime_ns
    assert (a.mode, a.owner, a.group, a.mtime_ns) == (
        before.mode, before.owner, before.group, before.mtime_ns
    )

def test_utimens(ns: Namespace, clock: FakeClock) -> None:
    f = mkfile(ns, b"f", mode=0o664)
    a, _ = ns.setattr(ALICE, V, f.ino, atime_ns=5, mtime_ns=-7)
    assert (a.atime_ns, a.mtime_ns, a.ctime_ns) == (5, -7, clock.t)
    a, _ = ns.setattr(BOB, V, f.ino, atime_now=True, mtime_now=True)  # W suffices
    assert a.atime_ns == a.mtime_ns == a.ctime_ns == clock.t
    # only one of them set to now (the other UTIME_OMIT) is explicit, as in Linux
    touched = a.atime_ns
    raises(errno.EPERM, ns.setattr, BOB, V, f.ino, mtime_now=True)
    a, _ = ns.setattr(ALICE, V, f.ino, mtime_now=True)
    assert (a.atime_ns, a.mtime_ns) == (touched, clock.t)
    raises(errno.EPERM, ns.setattr, BOB, V, f.ino, mtime_ns=1)
    raises(errno.EPERM, ns.setattr, BOB, V, f.ino, atime_ns=1, mtime_now=True)
    raises(errno.EACCES, ns.setattr, CAROL, V, f.ino, atime_now=True, mtime_now=True)
    raises(errno.EPERM, ns.setattr, CAROL, V, f.ino, atime_now=True)
    # a truncate's own "mtime now" needs only the W of the truncate
    assert ns.setattr(BOB, V, f.ino, size=0, mtime_now=True)[0].mtime_ns == clock.t
    assert ns.setattr(ROOT, V, f.ino, mtime_ns=3)[0].mtime_ns == 3
    # nothing asked: nothing changes, not even ctime
    before = ns.getattr(ALICE, V, f.ino)
    assert ns.setattr(CAROL, V, f.ino) == (before, None)


def test_update_size(ns: Namespace, clock: FakeClock) -> None:
    f = mkfile(ns, b"f", mode=0o600)
    a = ns.update_size(CAROL, V, f.ino, 10)  # the XCap was checked elsewhere
    assert (a.size, a.mtime_ns, a.ctime_ns) == (10, clock.t, clock.t)
    assert ns.update_size(ALICE, V, f.ino, 5, mtime_ns=42) == ns.getattr(ALICE, V, f.ino)
    a = ns.getattr(ALICE, V, f.ino)
    assert (a.size, a.mtime_ns, a.ctime_ns) == (10, 42, 42)
    assert ns.update_size(ALICE, V, f.ino, 11).size == 11
    raises(errno.EINVAL, ns.update_size, ALICE, V, f.ino, -1)
    raises(errno.EISDIR, ns.update_size, ALICE, V, ROOT_INO, 1)
    raises(errno.EINVAL, ns.update_size, ALICE, V,
           ns.symlink(ALICE, V, ROOT_INO, b"l", b"f").ino, 1)
    raises(errno.ESTALE, ns.update_size, ALICE, V, 999, 1)


# ========================================================================= removal
def test_unlink_and_pending_deletion(ns: Namespace, clock: FakeClock) -> None:
    d = mkdir(ns, b"d")
    f = mkfile(ns, b"f", parent=d.ino)
    ns.setxattr(ALICE, V, f.ino, b"user.a", b"1")
    ns.link(ALICE, V, f.ino, ROOT_INO, b"f2")
    assert ns.unlink(ALICE, V, d.ino, b"f") is None
    a = ns.getattr(ALICE, V, f.ino)
    assert (a.nlink, a.ctime_ns) == (1, clock.t)
    dd = ns.getattr(ALICE, V, d.ino)
    assert dd.mtime_ns == dd.ctime_ns == clock.t
    assert ns.pending_deletions(10) == []
    pid = ns.unlink(ALICE, V, ROOT_INO, b"f2")
    assert pid is not None
    raises(errno.ESTALE, ns.getattr, ALICE, V, f.ino)
    assert ns.pending_deletions(10) == [(pid, ns.get_volume(V).id, f.ino, xloc())]
    ns.deletions_done([pid])
    assert ns.pending_deletions(10) == []
    # files without objects leave nothing to delete
    ns.mknod(ALICE, V, ROOT_INO, b"m", 0o644, 0, 0)
    ns.symlink(ALICE, V, ROOT_INO, b"l", b"m")
    assert ns.unlink(ALICE, V, ROOT_INO, b"m") is None
    assert ns.unlink(ALICE, V, ROOT_INO, b"l") is None
    assert names(ns) == [b"d"]
    # inode numbers are never reused
    assert mkfile(ns, b"n").ino > f.ino + 2


def test_unlink_errors(ns: Namespace) -> None:
    d = mkdir(ns, b"d", mode=0o775)
    mkfile(ns, b"f", parent=d.ino)
    raises(errno.ENOENT, ns.unlink, ALICE, V, d.ino, b"nope")
    raises(errno.EISDIR, ns.unlink, ALICE, V, ROOT_INO, b"d")
    raises(errno.ENOTDIR, ns.unlink, ALICE, V, mkfile(ns, b"g").ino, b"x")
    raises(errno.EACCES, ns.unlink, CAROL, V, d.ino, b"f")
    ns.unlink(BOB, V, d.ino, b"f")  # group write on the directory


def test_rmdir(ns: Namespace, clock: FakeClock) -> None:
    d = mkdir(ns, b"d")
    e = mkdir(ns, b"e", parent=d.ino)
    mkfile(ns, b"f", parent=e.ino)
    raises(errno.ENOTEMPTY, ns.rmdir, ALICE, V, d.ino, b"e")
    raises(errno.ENOTDIR, ns.rmdir, ALICE, V, e.ino, b"f")
    raises(errno.ENOENT, ns.rmdir, ALICE, V, d.ino, b"nope")
    raises(errno.EACCES, ns.rmdir, CAROL, V, d.ino, b"e")
    ns.unlink(ALICE, V, e.ino, b"f")
    ns.setxattr(ALICE, V, e.ino, b"user.x", b"")
    assert ns.rmdir(ALICE, V, d.ino, b"e") is None
    a = ns.getattr(ALICE, V, d.ino)
    assert (a.nlink, a.mtime_ns, a.ctime_ns) == (2, clock.t, clock.t)
    raises(errno.ESTALE, ns.getattr, ALICE, V, e.ino)
    ns.rmdir(ALICE, V, ROOT_INO, b"d")
    assert ns.getattr(ALICE, V, ROOT_INO).nlink == 2
    raises(errno.EINVAL, ns.rmdir, ALICE, V, ROOT_INO, b".")
    raises(errno.EINVAL, ns.rmdir, ALICE, V, ROOT_INO, b"..")


@pytest.mark.parametrize(
    ("who", "dir_owner", "entry_owner", "ok"),
    [
        (BOB, "alice@physics", "bob@physics", True),  # owns the entry
        (BOB, "bob@physics", "carol@physics", True),  # owns the directory
        (BOB, "alice@physics", "carol@physics", False),
        (ROOT, "alice@physics", "carol@physics", True),
    ],
)
def test_sticky_directory(ns: Namespace, who: Identity, dir_owner: str, entry_owner: str,
                          ok: bool) -> None:
    t = ns.mkdir(ROOT, V, ROOT_INO, b"tmp", 0o1777, 0)
    ns.setattr(ROOT, V, t.ino, owner=dir_owner)
    for name in (b"f", b"g", b"h"):
        a = mkfile(ns, name, parent=t.ino, mode=0o666)
        ns.setattr(ROOT, V, a.ino, owner=entry_owner)
    a = mkdir(ns, b"sub", parent=t.ino, mode=0o777)
    ns.setattr(ROOT, V, a.ino, owner=entry_owner)
    ops: list[Callable[[], object]] = [
        lambda: ns.unlink(who, V, t.ino, b"f"),
        lambda: ns.rmdir(who, V, t.ino, b"sub"),
        lambda: ns.rename(who, V, t.ino, b"g", ROOT_INO, b"moved"),
        lambda: ns.rename(who, V, ROOT_INO, mkfile(ns, b"mine" + who.principal.encode(),
                                                   who=who).name if False else b"src",
                          t.ino, b"h"),
    ]
    mkfile(ns, b"src", who=who, mode=0o666)
    for op in ops:
        if ok:
            op()
        else:
            raises(errno.EPERM, op)


# ========================================================================== rename
def test_rename_simple(ns: Namespace, clock: FakeClock) -> None:
    f = mkfile(ns, b"f")
    old = ns.readdir(ALICE, V, ROOT_INO, 0, 10)[0].cursor
    assert ns.rename(ALICE, V, ROOT_INO, b"f", ROOT_INO, b"g") is None
    (entry,) = ns.readdir(ALICE, V, ROOT_INO, 0, 10)
    assert (entry.name, entry.attr.ino, entry.attr.ctime_ns) == (b"g", f.ino, clock.t)
    assert entry.cursor > old
    root = ns.getattr(ALICE, V, ROOT_INO)
    assert root.mtime_ns == root.ctime_ns == clock.t
    raises(errno.ENOENT, ns.rename, ALICE, V, ROOT_INO, b"f", ROOT_INO, b"h")
    raises(errno.ENOTDIR, ns.rename, ALICE, V, f.ino, b"x", ROOT_INO, b"h")
    raises(errno.ENOTDIR, ns.rename, ALICE, V, ROOT_INO, b"g", f.ino, b"h")
    raises(errno.ESTALE, ns.rename, ALICE, V, 999, b"g", ROOT_INO, b"h")
    for flags in (3, 6, 7, 8):
        raises(errno.EINVAL, ns.rename, ALICE, V, ROOT_INO, b"g", ROOT_INO, b"h", flags)


def test_rename_directory_across_parents(ns: Namespace, clock: FakeClock) -> None:
    a = mkdir(ns, b"a")
    b = mkdir(ns, b"b")
    d = mkdir(ns, b"d", parent=a.ino)
    mkfile(ns, b"f", parent=d.ino)
    ns.rename(ALICE, V, a.ino, b"d", b.ino, b"d2")
    assert ns.getattr(ALICE, V, a.ino).nlink == 2
    bb = ns.getattr(ALICE, V, b.ino)
    assert (bb.nlink, bb.mtime_ns) == (3, clock.t)
    assert ns.lookup(ALICE, V, d.ino, b"..").ino == b.ino
    assert names(ns, d.ino) == [b"f"]
    # over an empty directory
    e = mkdir(ns, b"e", parent=a.ino)
    ns.rename(ALICE, V, b.ino, b"d2", a.ino, b"e")
    raises(errno.ESTALE, ns.getattr, ALICE, V, e.ino)
    assert ns.getattr(ALICE, V, a.ino).nlink == 3
    assert ns.getattr(ALICE, V, b.ino).nlink == 2
    # over an empty directory in the same parent
    mkdir(ns, b"x", parent=a.ino)
    ns.rename(ALICE, V, a.ino, b"e", a.ino, b"x")
    assert ns.getattr(ALICE, V, a.ino).nlink == 3
    assert names(ns, a.ino) == [b"x"]


def test_rename_over_file(ns: Namespace) -> None:
    f = mkfile(ns, b"f")
    g = mkfile(ns, b"g")
    h = mkfile(ns, b"h")
    ns.link(ALICE, V, h.ino, ROOT_INO, b"h2")
    assert ns.rename(ALICE, V, ROOT_INO, b"f", ROOT_INO, b"h") is None  # h has a link left
    assert ns.getattr(ALICE, V, h.ino).nlink == 1
    pid = ns.rename(ALICE, V, ROOT_INO, b"g", ROOT_INO, b"h2")
    assert pid is not None and ns.pending_deletions(5)[0][:3] == (pid, ns.get_volume(V).id,
                                                                    h.ino)
    assert names(ns) == [b"h", b"h2"]
    assert ns.lookup(ALICE, V, ROOT_INO, b"h").ino == f.ino
    assert ns.lookup(ALICE, V, ROOT_INO, b"h2").ino == g.ino


def test_rename_type_errors(ns: Namespace) -> None:
    mkfile(ns, b"f")
    d = mkdir(ns, b"d")
    mkdir(ns, b"e")
    mkfile(ns, b"inside", parent=d.ino)
    raises(errno.ENOTDIR, ns.rename, ALICE, V, ROOT_INO, b"e", ROOT_INO, b"f")
    raises(errno.EISDIR, ns.rename, ALICE, V, ROOT_INO, b"f", ROOT_INO, b"e")
    raises(errno.ENOTEMPTY, ns.rename, ALICE, V, ROOT_INO, b"e", ROOT_INO, b"d")
    raises(errno.EEXIST, ns.rename, ALICE, V, ROOT_INO, b"f", ROOT_INO, b"e",
           RENAME_NOREPLACE)
    ns.rename(ALICE, V, ROOT_INO, b"f", ROOT_INO, b"new", RENAME_NOREPLACE)
    raises(errno.ENOENT, ns.rename, ALICE, V, ROOT_INO, b"new", ROOT_INO, b"nope",
           RENAME_EXCHANGE)


def test_rename_loops(ns: Namespace) -> None:
    a = mkdir(ns, b"a")
    b = mkdir(ns, b"b", parent=a.ino)
    c = mkdir(ns, b"c", parent=b.ino)
    raises(errno.EINVAL, ns.rename, ALICE, V, ROOT_INO, b"a", c.ino, b"x")
    raises(errno.EINVAL, ns.rename, ALICE, V, ROOT_INO, b"a", a.ino, b"x")
    raises(errno.EINVAL, ns.rename, ALICE, V, a.ino, b"b", c.ino, b"x", RENAME_NOREPLACE)
    raises(errno.ENOTEMPTY, ns.rename, ALICE, V, b.ino, b"c", ROOT_INO, b"a")
    raises(errno.EINVAL, ns.rename, ALICE, V, b.ino, b"c", ROOT_INO, b"a", RENAME_EXCHANGE)
    raises(errno.EINVAL, ns.rename, ALICE, V, ROOT_INO, b"a", b.ino, b"c", RENAME_EXCHANGE)
    # moving up is fine
    ns.rename(ALICE, V, b.ino, b"c", ROOT_INO, b"c")
    assert ns.getattr(ALICE, V, b.ino).nlink == 2


def test_rename_same_inode_is_a_noop(ns: Namespace) -> None:
    f = mkfile(ns, b"f")
    ns.link(ALICE, V, f.ino, ROOT_INO, b"g")
    before = ns.readdir(ALICE, V, ROOT_INO, 0, 10)
    assert ns.rename(ALICE, V, ROOT_INO, b"f", ROOT_INO, b"g") is None
    assert ns.rename(ALICE, V, ROOT_INO, b"f", ROOT_INO, b"f") is None
    assert ns.rename(ALICE, V, ROOT_INO, b"f", ROOT_INO, b"g", RENAME_EXCHANGE) is None
    assert ns.readdir(ALICE, V, ROOT_INO, 0, 10) == before


def test_rename_exchange(ns: Namespace, clock: FakeClock) -> None:
    a = mkdir(ns, b"a")
    b = mkdir(ns, b"b")
    d = mkdir(ns, b"d", parent=a.ino)
    f = mkfile(ns, b"f", parent=b.ino)
    cursors = {e.name: e.cursor for e in ns.readdir(ALICE, V, a.ino, 0, 10)}
    assert ns.rename(ALICE, V, a.ino, b"d", b.ino, b"f", RENAME_EXCHANGE) is None
    assert ns.lookup(ALICE, V, a.ino, b"d").ino == f.ino
    assert ns.lookup(ALICE, V, b.ino, b"f").ino == d.ino
    assert ns.readdir(ALICE, V, a.ino, 0, 10)[0].cursor > cursors[b"d"]
    assert ns.getattr(ALICE, V, a.ino).nlink == 2
    assert ns.getattr(ALICE, V, b.ino).nlink == 3
    assert ns.getattr(ALICE, V, f.ino).ctime_ns == ns.getattr(ALICE, V, d.ino).ctime_ns == (
        clock.t)
    assert ns.lookup(ALICE, V, d.ino, b"..").ino == b.ino
    # files in one directory
    g = mkfile(ns, b"g", parent=a.ino)
    ns.rename(ALICE, V, a.ino, b"d", a.ino, b"g", RENAME_EXCHANGE)
    assert ns.lookup(ALICE, V, a.ino, b"d").ino == g.ino
    assert ns.getattr(ALICE, V, a.ino).nlink == 2


def test_rename_permissions(ns: Namespace) -> None:
    src = mkdir(ns, b"src", mode=0o755)
    dst = mkdir(ns, b"dst", mode=0o777)
    mkfile(ns, b"f", parent=src.ino)
    open_ = mkdir(ns, b"open", mode=0o777)
    mkfile(ns, b"g", parent=open_.ino)
    mkfile(ns, b"h", who=BOB, parent=open_.ino)
    ro = mkdir(ns, b"ro", mode=0o755)
    raises(errno.EACCES, ns.rename, BOB, V, src.ino, b"f", dst.ino, b"f")
    raises(errno.EACCES, ns.rename, BOB, V, open_.ino, b"h", ro.ino, b"h")
    # exchange looks the target up first (as Linux): missing is ENOENT before any EACCES
    raises(errno.ENOENT, ns.rename, BOB, V, open_.ino, b"h", ro.ino, b"h", RENAME_EXCHANGE)
    ns.rename(BOB, V, open_.ino, b"g", dst.ino, b"g")  # file: no W on the file needed
    # a directory changing parent needs W on itself (its ".." changes)
    mine = mkdir(ns, b"mine", parent=open_.ino, mode=0o555)
    raises(errno.EACCES, ns.rename, ALICE, V, open_.ino, b"mine", dst.ino, b"mine")
    ns.rename(ALICE, V, open_.ino, b"mine", open_.ino, b"renamed")  # same parent: fine
    ns.rename(ROOT, V, open_.ino, b"renamed", dst.ino, b"mine")
    assert ns.lookup(ALICE, V, dst.ino, b"mine").ino == mine.ino


def test_rename_whiteout(ns: Namespace, clock: FakeClock) -> None:
    """RENAME_WHITEOUT (overlayfs): the source name becomes a character device 0:0 with
    no permission bits, owned by the caller, in the rename's transaction."""
    f = mkfile(ns, b"f")
    assert ns.rename(ROOT, V, ROOT_INO, b"f", ROOT_INO, b"g", RENAME_WHITEOUT) is None
    assert ns.lookup(ALICE, V, ROOT_INO, b"g").ino == f.ino
    w = ns.lookup(ALICE, V, ROOT_INO, b"f")
    assert (w.mode, w.rdev, w.nlink, w.size) == (stat.S_IFCHR, 0, 1, 0)
    assert (w.owner, w.group, w.acl) == ("root@physics", "admins@physics", False)
    assert w.ctime_ns == w.mtime_ns == clock.t
    assert ns.getattr(ALICE, V, f.ino).ctime_ns == clock.t
    root = ns.getattr(ALICE, V, ROOT_INO)
    assert (root.nlink, root.mtime_ns, root.ctime_ns) == (2, clock.t, clock.t)
    assert sorted(names(ns)) == [b"f", b"g"]
    # with RENAME_NOREPLACE: a whiteout is an entry like any other
    raises(errno.EEXIST, ns.rename, ROOT, V, ROOT_INO, b"g", ROOT_INO, b"f",
           RENAME_WHITEOUT | RENAME_NOREPLACE)
    ns.rename(ROOT, V, ROOT_INO, b"g", ROOT_INO, b"h", RENAME_WHITEOUT | RENAME_NOREPLACE)
    assert sorted(names(ns)) == [b"f", b"g", b"h"]
    assert stat.S_ISCHR(ns.lookup(ALICE, V, ROOT_INO, b"g").mode)
    # over a whiteout (overlayfs' copy-up renames onto them): it is replaced and freed
    ns.rename(ROOT, V, ROOT_INO, b"h", ROOT_INO, b"f", RENAME_WHITEOUT)
    raises(errno.ESTALE, ns.getattr, ALICE, V, w.ino)
    assert ns.lookup(ALICE, V, ROOT_INO, b"f").ino == f.ino
    assert sorted(names(ns)) == [b"f", b"g", b"h"]
    # over the last link of a file: its objects are queued for deletion
    g2 = mkfile(ns, b"victim")
    pid = ns.rename(ROOT, V, ROOT_INO, b"f", ROOT_INO, b"victim", RENAME_WHITEOUT)
    assert pid is not None and ns.pending_deletions(5)[0][2] == g2.ino
    # two names of one inode: nothing happens, no whiteout (Linux returns early)
    ns.link(ALICE, V, f.ino, ROOT_INO, b"other")
    before = ns.readdir(ALICE, V, ROOT_INO, 0, 10)
    assert ns.rename(ROOT, V, ROOT_INO, b"victim", ROOT_INO, b"other", RENAME_WHITEOUT) is None
    assert ns.readdir(ALICE, V, ROOT_INO, 0, 10) == before


def test_rename_whiteout_directory_across(ns: Namespace) -> None:
    a = mkdir(ns, b"a")
    b = mkdir(ns, b"b")
    d = mkdir(ns, b"d", parent=a.ino)
    mkfile(ns, b"inside", parent=d.ino)
    ns.rename(ROOT, V, a.ino, b"d", b.ino, b"d", RENAME_WHITEOUT)
    assert ns.getattr(ALICE, V, a.ino).nlink == 2  # the whiteout is no subdirectory
    assert ns.getattr(ALICE, V, b.ino).nlink == 3
    assert ns.lookup(ALICE, V, d.ino, b"..").ino == b.ino
    assert ns.lookup(ALICE, V, a.ino, b"d").mode == stat.S_IFCHR
    assert names(ns, b.ino) == [b"d"] and names(ns, d.ino) == [b"inside"]


def test_rename_whiteout_refusals(ns: Namespace) -> None:
    mkfile(ns, b"f", mode=0o666)
    before = ns.readdir(ALICE, V, ROOT_INO, 0, 10)
    raises(errno.EINVAL, ns.rename, ROOT, V, ROOT_INO, b"f", ROOT_INO, b"g",
           RENAME_WHITEOUT | RENAME_EXCHANGE)
    raises(errno.EINVAL, ns.rename, ROOT, V, ROOT_INO, b"f", ROOT_INO, b"g",
           RENAME_WHITEOUT | RENAME_EXCHANGE | RENAME_NOREPLACE)
    # a failed rename leaves no whiteout behind (one transaction)
    raises(errno.ENOENT, ns.rename, ROOT, V, ROOT_INO, b"nope", ROOT_INO, b"g", RENAME_WHITEOUT)
    full = mkdir(ns, b"full")
    mkfile(ns, b"x", parent=full.ino)
    mkdir(ns, b"e")
    raises(errno.ENOTEMPTY, ns.rename, ROOT, V, ROOT_INO, b"e", ROOT_INO, b"full",
           RENAME_WHITEOUT)
    raises(errno.EISDIR, ns.rename, ROOT, V, ROOT_INO, b"f", ROOT_INO, b"e", RENAME_WHITEOUT)
    ro = mkdir(ns, b"ro", mode=0o755)
    mkfile(ns, b"r", parent=ro.ino, mode=0o666)
    raises(errno.EACCES, ns.rename, BOB, V, ro.ino, b"r", ROOT_INO, b"r", RENAME_WHITEOUT)
    assert [e.name for e in ns.readdir(ALICE, V, ROOT_INO, 0, 10)] == [
        e.name for e in before] + [b"full", b"e", b"ro"]
    assert names(ns, ro.ino) == [b"r"]


def test_whiteouts_need_no_privilege(ns: Namespace) -> None:
    """As on Linux since 5.8: a whiteout is no device, anyone may make one (by rename or
    by mknod of a character device 0:0); other device nodes stay super only."""
    mkfile(ns, b"f", who=BOB, mode=0o644)
    ns.rename(BOB, V, ROOT_INO, b"f", ROOT_INO, b"g", RENAME_WHITEOUT)
    w = ns.lookup(BOB, V, ROOT_INO, b"f")
    assert (w.mode, w.rdev, w.owner, w.group) == (
        stat.S_IFCHR, 0, "bob@physics", "users@physics")
    m = ns.mknod(BOB, V, ROOT_INO, b"m", stat.S_IFCHR | 0o644, 0, 0o022)
    assert (m.mode, m.rdev, m.owner) == (stat.S_IFCHR | 0o644, 0, "bob@physics")
    raises(errno.EPERM, ns.mknod, BOB, V, ROOT_INO, b"b0", stat.S_IFBLK, 0, 0)
    raises(errno.EPERM, ns.mknod, BOB, V, ROOT_INO, b"c1", stat.S_IFCHR, 1, 0)


def test_rename_whiteout_inherits_like_mknod(ns: Namespace) -> None:
    """Made as Linux file systems make it (inode_init_owner, posix_acl_create): a setgid
    directory's group, and its default ACL limited to no permissions."""
    sg = ns.mkdir(ALICE, V, ROOT_INO, b"sg", 0o2777, 0)
    ns.setattr(ALICE, V, sg.ino, group="alice@physics")
    default = acls.parse("u::rwx,u:carol@physics:rwx,g::rx,m::rwx,o::rx")
    assert default is not None
    ns.setxattr(ALICE, V, sg.ino, acls.DEFAULT, acls.encode(default))
    mkfile(ns, b"f", parent=sg.ino)
    ns.rename(ROOT, V, sg.ino, b"f", ROOT_INO, b"f", RENAME_WHITEOUT)
    w = ns.lookup(ALICE, V, sg.ino, b"f")
    assert (w.mode, w.owner, w.group, w.acl) == (
        stat.S_IFCHR, "root@physics", "alice@physics", True)
    access = acls.decode(ns.getxattr(ALICE, V, w.ino, acls.ACCESS))
    assert access == acls.parse("u::---,u:carol@physics:rwx,g::r-x,m::---,o::---")


# ============================================================== link, symlink
def test_link(ns: Namespace, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    f = mkfile(ns, b"f")
    d = mkdir(ns, b"d")
    a = ns.link(BOB, V, f.ino, d.ino, b"g") if False else ns.link(ALICE, V, f.ino, d.ino, b"g")
    assert (a.nlink, a.ctime_ns) == (2, clock.t)
    assert ns.lookup(ALICE, V, d.ino, b"g") == a
    assert ns.getattr(ALICE, V, d.ino).mtime_ns == clock.t
    raises(errno.EPERM, ns.link, ALICE, V, d.ino, ROOT_INO, b"dlink")
    raises(errno.EEXIST, ns.link, ALICE, V, f.ino, d.ino, b"g")
    raises(errno.ESTALE, ns.link, ALICE, V, 999, d.ino, b"x")
    raises(errno.ENOTDIR, ns.link, ALICE, V, f.ino, f.ino, b"x")
    # others' files: protected_hardlinks (EPERM) before the directory's W (EACCES)
    raises(errno.EPERM, ns.link, BOB, V, f.ino, d.ino, b"x")
    ns.setattr(ALICE, V, f.ino, mode=0o666)
    raises(errno.EACCES, ns.link, BOB, V, f.ino, d.ino, b"x")
    ns.setattr(ALICE, V, f.ino, mode=0o644)
    monkeypatch.setattr(namespace, "LINK_MAX", 3)
    ns.link(ALICE, V, f.ino, d.ino, b"h")
    raises(errno.EMLINK, ns.link, ALICE, V, f.ino, d.ino, b"i")
    link = ns.symlink(ALICE, V, ROOT_INO, b"l", b"f")
    assert ns.link(ALICE, V, link.ino, d.ino, b"l2").nlink == 2


def test_symlink(ns: Namespace) -> None:
    a = ns.symlink(BOB, V, ROOT_INO, b"l", b"../some/where")
    assert (a.mode, a.size, a.nlink, a.owner) == (stat.S_IFLNK | 0o777, 13, 1, "bob@physics")
    assert ns.readlink(CAROL, V, a.ino) == b"../some/where"
    assert ns.lookup(ALICE, V, ROOT_INO, b"l") == a
    ns.symlink(BOB, V, ROOT_INO, b"long", b"t" * 4095)
    raises(errno.ENAMETOOLONG, ns.symlink, BOB, V, ROOT_INO, b"x", b"t" * 4096)
    raises(errno.ENOENT, ns.symlink, BOB, V, ROOT_INO, b"x", b"")
    raises(errno.EINVAL, ns.symlink, BOB, V, ROOT_INO, b"x", b"a\0b")
    raises(errno.EEXIST, ns.symlink, BOB, V, ROOT_INO, b"l", b"t")
    raises(errno.EINVAL, ns.readlink, ALICE, V, ROOT_INO)
    raises(errno.EINVAL, ns.readlink, ALICE, V, mkfile(ns, b"f").ino)


# ========================================================================= readdir
def test_readdir(ns: Namespace) -> None:
    d = mkdir(ns, b"d", mode=0o751)
    made = [mkfile(ns, b"f%02d" % i, parent=d.ino) for i in range(7)]
    entries = ns.readdir(BOB, V, d.ino, 0, 100)
    assert [e.name for e in entries] == [b"f%02d" % i for i in range(7)]
    assert [e.attr for e in entries] == made
    assert ns.readdir(ALICE, V, d.ino, entries[2].cursor, 3) == entries[3:6]
    assert ns.readdir(ALICE, V, d.ino, entries[-1].cursor, 3) == []
    assert ns.readdir(ALICE, V, d.ino, 0, 0) == []
    raises(errno.EINVAL, ns.readdir, ALICE, V, d.ino, 0, -1)
    raises(errno.EACCES, ns.readdir, CAROL, V, d.ino, 0, 10)
    raises(errno.ENOTDIR, ns.readdir, ALICE, V, made[0].ino, 0, 10)
    raises(errno.ESTALE, ns.readdir, ALICE, V, 999, 0, 10)
    assert len(ns.readdir(ROOT, V, d.ino, 0, 10)) == 7


def test_readdir_cursors_are_stable_while_entries_change(ns: Namespace) -> None:
    d = mkdir(ns, b"d")
    for i in range(20):
        mkfile(ns, b"f%02d" % i, parent=d.ino)
    stayed = {b"f%02d" % i for i in range(20)}
    seen: list[bytes] = []
    cursor, step = 0, 0
    while True:
        batch = ns.readdir(ALICE, V, d.ino, cursor, 3)
        if not batch:
            break
        seen += [e.name for e in batch]
        cursor = batch[-1].cursor
        step += 1
        # meanwhile: new entries, removals of seen and unseen entries, a rename
        if step < 5:
            mkfile(ns, b"new%02d" % step, parent=d.ino)
        for victim in (b"f%02d" % (2 * step), b"f%02d" % (19 - step)):
            if victim in stayed:
                ns.unlink(ALICE, V, d.ino, victim)
                stayed.discard(victim)
    assert len(seen) == len(set(seen))  # nothing twice
    assert stayed <= set(seen)  # nothing that stayed was missed
    assert {n for n in seen if n.startswith(b"new")} == {b"new%02d" % i for i in range(1, 5)}
    # a renamed entry gets a new cursor: it comes after everything seen
    last = ns.readdir(ALICE, V, d.ino, 0, 1000)[-1].cursor
    first = sorted(stayed)[0]
    ns.rename(ALICE, V, d.ino, first, d.ino, b"renamed")
    assert [e.name for e in ns.readdir(ALICE, V, d.ino, last, 10)] == [b"renamed"]


# ========================================================================== xattrs
def test_xattr_basics(ns: Namespace, clock: FakeClock) -> None:
    f = mkfile(ns, b"f")
    ns.setxattr(ALICE, V, f.ino, b"user.b", b"2")
    assert ns.getattr(ALICE, V, f.ino).ctime_ns == clock.t
    ns.setxattr(ALICE, V, f.ino, b"user.a", b"\0\xff")
    assert ns.getxattr(ALICE, V, f.ino, b"user.a") == b"\0\xff"
    assert ns.listxattr(CAROL, V, f.ino) == [b"user.a", b"user.b"]
    ns.setxattr(ALICE, V, f.ino, b"user.a", b"new")
    assert ns.getxattr(BOB, V, f.ino, b"user.a") == b"new"
    raises(errno.EEXIST, ns.setxattr, ALICE, V, f.ino, b"user.a", b"x", XATTR_CREATE)
    raises(errno.ENODATA, ns.setxattr, ALICE, V, f.ino, b"user.c", b"x", XATTR_REPLACE)
    ns.setxattr(ALICE, V, f.ino, b"user.a", b"r", XATTR_REPLACE)
    ns.setxattr(ALICE, V, f.ino, b"user.c", b"c", XATTR_CREATE)
    raises(errno.EINVAL, ns.setxattr, ALICE, V, f.ino, b"user.c", b"c", 4)
    raises(errno.ENODATA, ns.getxattr, ALICE, V, f.ino, b"user.zz")
    ns.removexattr(ALICE, V, f.ino, b"user.b")
    assert ns.getattr(ALICE, V, f.ino).ctime_ns == clock.t
    raises(errno.ENODATA, ns.removexattr, ALICE, V, f.ino, b"user.b")
    assert ns.listxattr(ALICE, V, f.ino) == [b"user.a", b"user.c"]
    ns.setxattr(ALICE, V, f.ino, b"user.big", b"v" * 65536)
    raises(errno.E2BIG, ns.setxattr, ALICE, V, f.ino, b"user.big", b"v" * 65537)
    ns.setxattr(ALICE, V, f.ino, b"user." + b"n" * 250, b"")
    raises(errno.ERANGE, ns.setxattr, ALICE, V, f.ino, b"user." + b"n" * 251, b"")
    raises(errno.ERANGE, ns.getxattr, ALICE, V, f.ino, b"")
    raises(errno.EINVAL, ns.getxattr, ALICE, V, f.ino, b"user.")
    raises(errno.ESTALE, ns.getxattr, ALICE, V, 999, b"user.a")
    raises(errno.ESTALE, ns.listxattr, ALICE, V, 999)


def test_xattr_user_permissions(ns: Namespace) -> None:
    f = mkfile(ns, b"f", mode=0o640)
    ns.setxattr(ALICE, V, f.ino, b"user.a", b"1")
    assert ns.getxattr(BOB, V, f.ino, b"user.a") == b"1"
    raises(errno.EACCES, ns.setxattr, BOB, V, f.ino, b"user.a", b"2")
    raises(errno.EACCES, ns.removexattr, BOB, V, f.ino, b"user.a")
    raises(errno.EACCES, ns.getxattr, CAROL, V, f.ino, b"user.a")
    assert ns.listxattr(CAROL, V, f.ino) == [b"user.a"]  # listing needs no permission
    ns.setxattr(ROOT, V, f.ino, b"user.r", b"1")
    link = ns.symlink(ALICE, V, ROOT_INO, b"l", b"f")
    fifo = ns.mknod(ALICE, V, ROOT_INO, b"p", stat.S_IFIFO | 0o666, 0, 0)
    for ino in (link.ino, fifo.ino):
        raises(errno.EPERM, ns.setxattr, ALICE, V, ino, b"user.a", b"1")
        raises(errno.ENODATA, ns.getxattr, ALICE, V, ino, b"user.a")
    t = ns.mkdir(ALICE, V, ROOT_INO, b"tmp", 0o1777, 0)
    raises(errno.EPERM, ns.setxattr, BOB, V, t.ino, b"user.a", b"1")
    ns.setxattr(ALICE, V, t.ino, b"user.a", b"1")


def test_xattr_privileged_namespaces(ns: Namespace) -> None:
    f = mkfile(ns, b"f", mode=0o666)
    ns.setxattr(ALICE, V, f.ino, b"user.u", b"u")
    for name in (b"trusted.t", b"security.s"):
        raises(errno.EPERM, ns.setxattr, ALICE, V, f.ino, name, b"x")
        ns.setxattr(ROOT, V, f.ino, name, b"x")
        assert ns.getxattr(ROOT, V, f.ino, name) == b"x"
        raises(errno.ENODATA, ns.getxattr, ALICE, V, f.ino, name)
        raises(errno.EPERM, ns.removexattr, ALICE, V, f.ino, name)
    assert ns.listxattr(ALICE, V, f.ino) == [b"user.u"]
    assert ns.listxattr(ROOT, V, f.ino) == [b"security.s", b"trusted.t", b"user.u"]
    ns.removexattr(ROOT, V, f.ino, b"trusted.t")
    for name in (b"system.other", b"os2.x", b"userx"):  # (system.posix_acl_*: ACLs)
        raises(errno.EOPNOTSUPP, ns.setxattr, ROOT, V, f.ino, name, b"x")
        raises(errno.EOPNOTSUPP, ns.getxattr, ROOT, V, f.ino, name)
        raises(errno.EOPNOTSUPP, ns.removexattr, ROOT, V, f.ino, name)
    # xattrs go with their inode
    ns.unlink(ALICE, V, ROOT_INO, b"f")
