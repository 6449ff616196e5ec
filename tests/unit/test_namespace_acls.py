"""POSIX ACLs in the MRC namespace (xfs.mrc.xattrs, namespace, perms): who may set them,
what they grant, how they follow chmod, and inheritance of default ACLs. Every test ends
with fsck of the store, which checks the stored ACLs too."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.unit.mrc_world import ALICE, BOB, CAROL, DAVE, ROOT, V, fsck_checked_store, raises
from xfs.mrc import acl as acls
from xfs.mrc import fsck
from xfs.mrc.acl import Acl
from xfs.mrc.namespace import Namespace
from xfs.mrc.perms import R_OK, W_OK, X_OK
from xfs.mrc.sql import MetaStore
from xfs.mrc.store import Store
from xfs.proto.errors import XfsError
from xfs.proto.records import ROOT_INO, Attr, Identity, Replica, StripingPolicy, XLocSet

XLOC = XLocSet(version=1, replicas=[Replica(osds=["osd-1"], striping=StripingPolicy())])


@pytest.fixture
def store(store_spec: str | Path) -> Iterator[MetaStore]:
    yield from fsck_checked_store(store_spec)


@pytest.fixture
def ns(store: Store) -> Namespace:
    n = Namespace(store)
    n.create_volume(ROOT, V, owner="alice@physics", group="users@physics", mode=0o777,
                    striping=StripingPolicy())
    return n


def parse(text: str) -> Acl:
    acl = acls.parse(text)
    assert acl is not None
    return acl


def mkfile(ns: Namespace, name: bytes, mode: int = 0o644, parent: int = ROOT_INO,
           umask: int = 0, who: Identity = ALICE) -> Attr:
    return ns.create(who, V, parent, name, mode, os.O_WRONLY | os.O_CREAT, umask, XLOC)[0]


def set_acl(ns: Namespace, ino: int, text: str, who: Identity = ALICE,
            name: bytes = acls.ACCESS) -> None:
    ns.setxattr(who, V, ino, name, acls.encode(parse(text)))


def get_acl(ns: Namespace, ino: int, name: bytes = acls.ACCESS) -> Acl | None:
    try:
        return acls.decode(ns.getxattr(BOB, V, ino, name))
    except XfsError as e:
        assert e.code == errno.ENODATA
        return None


def may(ns: Namespace, who: Identity, ino: int, mask: int) -> bool:
    try:
        ns.access(who, V, ino, mask)
    except XfsError as e:
        assert e.code == errno.EACCES
        return False
    return True


# ------------------------------------------------------------------ what ACLs grant
def test_named_user_gets_what_the_mode_denies(ns: Namespace) -> None:
    f = mkfile(ns, b"f", 0o600)
    raises(errno.EACCES, ns.open, CAROL, V, f.ino, os.O_RDONLY)
    set_acl(ns, f.ino, "u::rw,u:carol@physics:r,g::-,m::r,o::-")
    assert ns.getattr(ALICE, V, f.ino).mode == stat.S_IFREG | 0o640  # the mask shows
    ns.open(CAROL, V, f.ino, os.O_RDONLY)
    raises(errno.EACCES, ns.open, CAROL, V, f.ino, os.O_WRONLY)
    raises(errno.EACCES, ns.open, BOB, V, f.ino, os.O_RDONLY)  # owning group: ---
    assert not may(ns, DAVE, f.ino, R_OK)
    assert may(ns, ROOT, f.ino, R_OK | W_OK)  # super keeps its bypass
    assert not may(ns, ROOT, f.ino, X_OK)


def test_the_mask_limits_and_chmod_moves_it(ns: Namespace) -> None:
    f = mkfile(ns, b"f", 0o600)
    set_acl(ns, f.ino, "u::rw,u:carol@physics:rw,g::r,g:team@physics:rw,m::r,o::-")
    assert may(ns, CAROL, f.ino, R_OK) and not may(ns, CAROL, f.ino, W_OK)
    assert may(ns, DAVE, f.ino, R_OK) and not may(ns, DAVE, f.ino, W_OK)
    assert may(ns, BOB, f.ino, R_OK) and not may(ns, BOB, f.ino, W_OK)
    ns.setattr(ALICE, V, f.ino, mode=0o660)  # chmod g+w: the mask is rw now
    assert get_acl(ns, f.ino) == parse(
        "u::rw,u:carol@physics:rw,g::r,g:team@physics:rw,m::rw,o::-"
    )
    assert may(ns, CAROL, f.ino, R_OK | W_OK) and may(ns, DAVE, f.ino, W_OK)
    assert may(ns, BOB, f.ino, R_OK) and not may(ns, BOB, f.ino, W_OK)  # group:: is r
    ns.setattr(ALICE, V, f.ino, mode=0o604)  # an empty mask: the mode decides (Linux)
    assert get_acl(ns, f.ino) == parse(
        "u::rw,u:carol@physics:rw,g::r,g:team@physics:rw,m::-,o::r"
    )
    assert may(ns, CAROL, f.ino, R_OK) and not may(ns, CAROL, f.ino, W_OK)  # other
    assert not may(ns, BOB, f.ino, R_OK)  # the group bits


def test_named_group_and_directory_search(ns: Namespace) -> None:
    d = ns.mkdir(ALICE, V, ROOT_INO, b"d", 0o700, 0)
    f = mkfile(ns, b"f", 0o644, parent=d.ino)
    raises(errno.EACCES, ns.lookup, DAVE, V, d.ino, b"f")
    set_acl(ns, d.ino, "u::rwx,g::-,g:team@physics:x,m::x,o::-")
    assert ns.lookup(DAVE, V, d.ino, b"f").ino == f.ino
    raises(errno.EACCES, ns.readdir, DAVE, V, d.ino, 0, 10)
    raises(errno.EACCES, ns.mkdir, DAVE, V, d.ino, b"x", 0o755, 0)
    raises(errno.EACCES, ns.lookup, CAROL, V, d.ino, b"f")


def test_acl_checks_apply_to_every_operation(ns: Namespace) -> None:
    f = mkfile(ns, b"f", 0o600)
    set_acl(ns, f.ino, "u::rw,u:carol@physics:rw,g::-,m::rw,o::-")
    ns.setattr(CAROL, V, f.ino, size=0)  # truncate: W
    ns.setattr(CAROL, V, f.ino, atime_now=True, mtime_now=True)  # touch: W
    ns.link(CAROL, V, f.ino, ROOT_INO, b"f2")  # protected_hardlinks: R|W
    ns.setxattr(CAROL, V, f.ino, b"user.a", b"1")
    assert ns.getxattr(CAROL, V, f.ino, b"user.a") == b"1"
    raises(errno.EACCES, ns.getxattr, DAVE, V, f.ino, b"user.a")
    raises(errno.EPERM, ns.setattr, CAROL, V, f.ino, mode=0o666)  # still not the owner


# ------------------------------------------------------------------ setting and removing
def test_who_may_set_acls(ns: Namespace) -> None:
    f = mkfile(ns, b"f", 0o666)
    raises(errno.EPERM, set_acl, ns, f.ino, "u::rw,u:bob@physics:rw,g::r,m::rw,o::r", BOB)
    raises(errno.EPERM, ns.removexattr, BOB, V, f.ino, acls.ACCESS)
    set_acl(ns, f.ino, "u::rw,u:bob@physics:rw,g::r,m::rw,o::r", ROOT)  # super may
    assert get_acl(ns, f.ino) is not None
    raises(errno.EINVAL, ns.setxattr, ALICE, V, f.ino, acls.ACCESS, b"junk")
    bad = acls.encode(Acl((acls.Entry(acls.Tag.USER_OBJ, "", 6),)))
    raises(errno.EINVAL, ns.setxattr, ALICE, V, f.ino, acls.ACCESS, bad)
    raises(errno.EPERM, ns.setxattr, BOB, V, f.ino, acls.ACCESS, b"junk")  # EPERM first


def test_default_acls_only_on_directories(ns: Namespace) -> None:
    f = mkfile(ns, b"f")
    raises(errno.EACCES, set_acl, ns, f.ino, "u::rw,g::r,o::r", name=acls.DEFAULT)
    ns.removexattr(ALICE, V, f.ino, acls.DEFAULT)  # nothing to remove: fine, as on Linux
    ns.removexattr(BOB, V, f.ino, acls.DEFAULT)
    raises(errno.ENODATA, ns.getxattr, ALICE, V, f.ino, acls.DEFAULT)
    link = ns.symlink(ALICE, V, ROOT_INO, b"l", b"f")
    raises(errno.EOPNOTSUPP, set_acl, ns, link.ino, "u::rw,g::r,o::r")
    raises(errno.ENODATA, ns.getxattr, ALICE, V, link.ino, acls.ACCESS)


def test_setting_and_removing_the_access_acl(ns: Namespace) -> None:
    f = mkfile(ns, b"f", 0o644)
    t0 = ns.getattr(ALICE, V, f.ino).ctime_ns
    ns.removexattr(ALICE, V, f.ino, acls.ACCESS)  # none there: fine
    set_acl(ns, f.ino, "u::rwx,u:bob@physics:r,g::r,m::r,o::-")
    a = ns.getattr(ALICE, V, f.ino)
    assert a.mode == stat.S_IFREG | 0o740 and a.ctime_ns > t0
    assert acls.ACCESS in ns.listxattr(CAROL, V, f.ino)
    ns.removexattr(ALICE, V, f.ino, acls.ACCESS)  # the mode stays
    assert get_acl(ns, f.ino) is None
    assert ns.getattr(ALICE, V, f.ino).mode == stat.S_IFREG | 0o740
    # an ACL that the mode can say is not kept: only the mode changes
    set_acl(ns, f.ino, "u::rw,g::rw,o::r")
    assert get_acl(ns, f.ino) is None
    assert ns.getattr(ALICE, V, f.ino).mode == stat.S_IFREG | 0o664
    assert ns.listxattr(ALICE, V, f.ino) == []


def test_setting_an_acl_drops_setgid_outside_the_group(ns: Namespace) -> None:
    f = mkfile(ns, b"f", 0o644)
    ns.setattr(ROOT, V, f.ino, group="others@physics")
    ns.setattr(ROOT, V, f.ino, mode=0o2754)
    set_acl(ns, f.ino, "u::rwx,u:bob@physics:r,g::r,m::r,o::r")  # alice: not in others
    assert ns.getattr(ALICE, V, f.ino).mode == stat.S_IFREG | 0o744
    ns.setattr(ROOT, V, f.ino, mode=0o2754)
    set_acl(ns, f.ino, "u::rwx,u:bob@physics:r,g::r,m::rx,o::r", ROOT)
    assert ns.getattr(ALICE, V, f.ino).mode == stat.S_IFREG | 0o2754


def test_chown_keeps_the_acl_in_sync(ns: Namespace) -> None:
    f = mkfile(ns, b"f", 0o644)
    set_acl(ns, f.ino, "u::rwx,u:bob@physics:rwx,g::r,m::rwx,o::r")
    ns.setattr(ROOT, V, f.ino, mode=0o4775)
    ns.setattr(ROOT, V, f.ino, owner="carol@physics")  # drops S_ISUID: the bits stay
    assert ns.getattr(ALICE, V, f.ino).mode == stat.S_IFREG | 0o775
    assert may(ns, CAROL, f.ino, R_OK | W_OK | X_OK)
    assert not may(ns, ALICE, f.ino, W_OK)  # alice has no entry: owning group, r


# ------------------------------------------------------------------ inheritance
def test_attributes_say_whether_an_access_acl_is_there(ns: Namespace) -> None:
    """Every reply that carries attributes says so (the client decides by it whether
    the kernel may cache a directory's entries for all local users)."""
    d = ns.mkdir(ALICE, V, ROOT_INO, b"d", 0o755, 0)
    assert not d.acl
    set_acl(ns, d.ino, "u::rwx,u:bob@physics:-,g::rx,m::rx,o::rx")
    assert ns.getattr(ALICE, V, d.ino).acl
    assert ns.lookup(ALICE, V, ROOT_INO, b"d").acl
    assert [(e.name, e.attr.acl) for e in ns.readdir(ALICE, V, ROOT_INO, 0, 10)] == [(b"d", True)]
    ns.setattr(ALICE, V, d.ino, mode=0o750)
    assert ns.getattr(ALICE, V, d.ino).acl  # chmod keeps the ACL (its mask moves)
    # inherited on create: the new entries' own attributes say so at once
    set_acl(ns, d.ino, "u::rwx,u:carol@physics:rwx,g::rx,m::rwx,o::rx", name=acls.DEFAULT)
    assert mkfile(ns, b"f", 0o644, parent=d.ino).acl
    assert ns.mkdir(ALICE, V, d.ino, b"sub", 0o755, 0).acl
    assert [e.attr.acl for e in ns.readdir(ALICE, V, d.ino, 0, 10)] == [True, True]
    ns.removexattr(ALICE, V, d.ino, acls.ACCESS)
    assert not ns.getattr(ALICE, V, d.ino).acl
    assert not ns.lookup(ALICE, V, ROOT_INO, b"d").acl
    assert not mkfile(ns, b"plain", 0o644).acl  # no default ACL above it


def test_default_acl_is_inherited(ns: Namespace) -> None:
    d = ns.mkdir(ALICE, V, ROOT_INO, b"d", 0o755, 0)
    default = "u::rwx,u:carol@physics:rwx,g::r-x,m::rwx,o::r-x"
    set_acl(ns, d.ino, default, name=acls.DEFAULT)
    assert get_acl(ns, d.ino) is None  # the access ACL is separate
    # a file: the default masked by the requested mode; the umask does not apply
    f = mkfile(ns, b"f", 0o666, parent=d.ino, umask=0o077)
    assert f.mode == stat.S_IFREG | 0o664
    assert get_acl(ns, f.ino) == parse("u::rw,u:carol@physics:rwx,g::rx,m::rw,o::r")
    assert get_acl(ns, f.ino, acls.DEFAULT) is None
    assert may(ns, CAROL, f.ino, R_OK | W_OK) and not may(ns, CAROL, f.ino, X_OK)
    # a directory: also its default, and its own children inherit in turn
    sub = ns.mkdir(ALICE, V, d.ino, b"sub", 0o777, 0o077)
    assert sub.mode == stat.S_IFDIR | 0o775
    assert get_acl(ns, sub.ino) == parse(default)
    assert get_acl(ns, sub.ino, acls.DEFAULT) == parse(default)
    g = mkfile(ns, b"g", 0o600, parent=sub.ino, umask=0o022)
    assert g.mode == stat.S_IFREG | 0o600
    assert get_acl(ns, g.ino) == parse("u::rw,u:carol@physics:rwx,g::rx,m::-,o::-")
    # mknod too, symlinks not
    p = ns.mknod(ALICE, V, d.ino, b"p", stat.S_IFIFO | 0o644, 0, 0o022)
    assert p.mode == stat.S_IFIFO | 0o644
    assert get_acl(ns, p.ino) == parse("u::rw,u:carol@physics:rwx,g::rx,m::r,o::r")
    link = ns.symlink(ALICE, V, d.ino, b"l", b"f")
    assert link.mode == stat.S_IFLNK | 0o777 and get_acl(ns, link.ino) is None
    # a minimal default ACL: no access ACL, but still no umask
    set_acl(ns, d.ino, "u::rwx,g::rwx,o::rx", name=acls.DEFAULT)
    h = mkfile(ns, b"h", 0o666, parent=d.ino, umask=0o077)
    assert h.mode == stat.S_IFREG | 0o664 and get_acl(ns, h.ino) is None
    # without a default ACL the umask applies, as before
    ns.removexattr(ALICE, V, d.ino, acls.DEFAULT)
    assert mkfile(ns, b"i", 0o666, parent=d.ino, umask=0o077).mode == stat.S_IFREG | 0o600


def test_inherited_setgid_directory(ns: Namespace) -> None:
    d = ns.mkdir(ALICE, V, ROOT_INO, b"d", 0o2775, 0)
    set_acl(ns, d.ino, "u::rwx,g:team@physics:rwx,g::rx,m::rwx,o::-", name=acls.DEFAULT)
    sub = ns.mkdir(BOB, V, d.ino, b"sub", 0o755, 0o022)
    assert sub.mode == stat.S_IFDIR | 0o2750 and sub.group == "users@physics"
    assert get_acl(ns, sub.ino) == parse("u::rwx,g:team@physics:rwx,g::rx,m::rx,o::-")
    assert may(ns, DAVE, sub.ino, R_OK | X_OK) and not may(ns, DAVE, sub.ino, W_OK)


def test_acls_go_with_their_inode(ns: Namespace, store: Store) -> None:
    d = ns.mkdir(ALICE, V, ROOT_INO, b"d", 0o755, 0)
    set_acl(ns, d.ino, "u::rwx,u:bob@physics:rx,g::rx,m::rx,o::-", name=acls.DEFAULT)
    f = mkfile(ns, b"f", parent=d.ino)
    ns.unlink(ALICE, V, d.ino, b"f")
    ns.rmdir(ALICE, V, ROOT_INO, b"d")
    with store.read() as cur:
        assert cur.execute("SELECT count(*) FROM xattrs").fetchone()[0] == 0
    raises(errno.ESTALE, ns.getxattr, ALICE, V, f.ino, acls.ACCESS)


# ------------------------------------------------------------------ fsck
@pytest.mark.parametrize(
    ("value", "mode", "problem"),
    [
        (b"\xc1", None, "invalid ACL"),
        (acls.encode(parse("u::rw,u:b@p:r,g::r,m::r,o::r")), 0o600, "gives 644, the mode 600"),
        (acls.encode(parse("u::rw,g::r,o::r")), 0o644, "says no more than the mode"),
    ],
)
def test_fsck_checks_stored_acls(ns: Namespace, store: Store, value: bytes, mode: int | None,
                                 problem: str) -> None:
    f = mkfile(ns, b"f", 0o644)
    def raw(sql: str, args: tuple[object, ...] = ()) -> Any:
        with store.transaction() as cur:  # behind the namespace's back
            return cur.execute(sql, args).fetchall()

    vid = raw("SELECT id FROM volumes")[0][0]
    raw("INSERT INTO xattrs VALUES (?, ?, ?, ?)", (vid, f.ino, acls.ACCESS, value))
    if mode is not None:
        raw("UPDATE inodes SET mode = ? WHERE ino = ?", (stat.S_IFREG | mode, f.ino))
    problems = fsck.check(store)
    assert any(problem in p for p in problems), problems
    # a default ACL on a file, not canonical
    raw("DELETE FROM xattrs")
    blob = msgpack.packb([1, [[0x20, "", 4], [0x04, "", 4], [0x01, "", 6]]])
    raw("INSERT INTO xattrs VALUES (?, ?, ?, ?)", (vid, f.ino, acls.DEFAULT, blob))
    problems = fsck.check(store)
    assert any("on a 0o100000 inode" in p for p in problems), problems
    assert any("not in canonical form" in p for p in problems), problems
    raw("DELETE FROM xattrs")
    raw("UPDATE inodes SET mode = ? WHERE ino = ?", (stat.S_IFREG | 0o644, f.ino))
