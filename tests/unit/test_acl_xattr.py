"""The client's ACL xattrs (xfs.client.acl_xattr): Linux's binary form with local ids and
the text form with grid names, translated through an identity map; and the coroutines
over a real MRC namespace (no kernel)."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from xfs.client import acl_xattr
from xfs.client.credentials import account_name
from xfs.client.idmap import OVERFLOW_ID, IdentityMap
from xfs.client.session import Session
from xfs.mrc import acl as acls
from xfs.mrc import fsck
from xfs.mrc.acl import Acl, Tag
from xfs.mrc.namespace import Namespace
from xfs.mrc.store import Store
from xfs.proto.errors import XfsError
from xfs.proto.records import ROOT_INO, Attr, Identity, Kind, Replica, Role, StripingPolicy, XLocSet

IDMAP = IdentityMap(
    "physics",
    users={"alice@physics": 1001, "bob@physics": 1002, "root@physics": 1005},
    groups={"users@physics": 2001, "team@physics": 2002},
)
ACL_USER, ACL_GROUP = 0x02, 0x08
UNDEF = 0xFFFFFFFF


def parse(text: str) -> Acl:
    acl = acls.parse(text)
    assert acl is not None
    return acl


def linux(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def code_of(fn: Callable[..., object], *args: object) -> int:
    with pytest.raises(XfsError) as info:
        fn(*args)
    return info.value.code


# ------------------------------------------------------------------ pure translation
def test_to_linux_maps_names_to_local_ids_in_kernel_order() -> None:
    acl = parse("u::rw,u:bob@physics:r,u:alice@physics:rw,g::r,g:team@physics:rx,m::rwx,o::-")
    assert acl_xattr.to_linux(acl, IDMAP) == linux(
        (0x01, 6, UNDEF), (ACL_USER, 6, 1001), (ACL_USER, 4, 1002), (0x04, 4, UNDEF),
        (ACL_GROUP, 5, 2002), (0x10, 7, UNDEF), (0x20, 0, UNDEF),
    )


def test_unknown_names_show_as_one_overflow_entry() -> None:
    acl = parse("u::rw,u:zed@chem:r,u:yan@chem:w,g::r,g:x@chem:x,m::rwx,o::-")
    assert acl_xattr.to_linux(acl, IDMAP) == linux(
        (0x01, 6, UNDEF), (ACL_USER, 6, OVERFLOW_ID), (0x04, 4, UNDEF),
        (ACL_GROUP, 1, OVERFLOW_ID), (0x10, 7, UNDEF), (0x20, 0, UNDEF),
    )


def test_from_linux() -> None:
    value = linux((0x01, 6, UNDEF), (ACL_USER, 4, 1002), (0x04, 4, UNDEF),
                  (ACL_GROUP, 7, 2002), (0x10, 7, UNDEF), (0x20, 0, UNDEF))
    assert acl_xattr.from_linux(value, IDMAP, None) == parse(
        "u::rw,u:bob@physics:r,g::r,g:team@physics:rwx,m::rwx,o::-"
    )
    assert acl_xattr.from_linux(linux(), IDMAP, None) is None  # no entries: removal
    # a local id with no passwd entry is the numeric principal of this VO
    value = linux((0x01, 6, UNDEF), (ACL_USER, 4, 4242), (0x04, 4, UNDEF), (0x10, 4, UNDEF),
                  (0x20, 0, UNDEF))
    acl = acl_xattr.from_linux(value, IDMAP, None)
    assert acl is not None and acl.get(Tag.USER, "4242@physics") is not None


@settings(max_examples=300, deadline=None)
@given(
    users=st.sets(st.sampled_from(["alice@physics", "bob@physics", "4242@physics"])),
    groups=st.sets(st.sampled_from(["users@physics", "team@physics", "4343@physics"])),
    perms=st.lists(st.integers(0, 7), min_size=10, max_size=10),
)
def test_round_trip(users: set[str], groups: set[str], perms: list[int]) -> None:
    p = iter(perms)
    text = f"u::{next(p)},g::{next(p)},o::{next(p)},m::{next(p)}"
    text += "".join(f",u:{u}:{next(p)}" for u in sorted(users))
    text += "".join(f",g:{g}:{next(p)}" for g in sorted(groups))
    acl = parse(text)
    assert acl_xattr.from_linux(acl_xattr.to_linux(acl, IDMAP), IDMAP, None) == acl


def test_overflow_entry_keeps_the_unknown_names() -> None:
    current = parse("u::rw,u:zed@chem:r,u:yan@chem:w,u:bob@physics:r,g::r,g:x@chem:x,m::rwx,o::-")
    shown = acl_xattr.to_linux(current, IDMAP)
    # setfacl -m u:alice:rwx: reads what is shown, adds an entry, writes it all back
    edited = shown[:4] + struct.pack("<HHI", ACL_USER, 7, 1001) + shown[4:]
    acl = acl_xattr.from_linux(edited, IDMAP, current)
    assert acl == parse(
        "u::rw,u:zed@chem:r,u:yan@chem:w,u:bob@physics:r,u:alice@physics:rwx,g::r,g:x@chem:x,"
        "m::rwx,o::-"
    )
    # without the overflow entries (setfacl -x u:65534), the unknown names go
    value = linux((0x01, 6, UNDEF), (0x04, 4, UNDEF), (0x20, 0, UNDEF))
    assert acl_xattr.from_linux(value, IDMAP, current) == parse("u::rw,g::r,o::-")


def test_from_linux_refuses() -> None:
    ok = [(0x01, 6, UNDEF), (0x04, 4, UNDEF), (0x10, 4, UNDEF), (0x20, 0, UNDEF)]
    f = acl_xattr.from_linux
    assert code_of(f, b"\x02\0\0", IDMAP, None) == errno.EINVAL
    assert code_of(f, linux(*ok) + b"\0", IDMAP, None) == errno.EINVAL
    assert code_of(f, struct.pack("<I", 1) + linux(*ok)[4:], IDMAP, None) == errno.EOPNOTSUPP
    assert code_of(f, linux(*ok, (0x40, 4, UNDEF)), IDMAP, None) == errno.EINVAL
    # the overflow id with nothing to keep is its own account's (if it has a grid name)
    nobody = IdentityMap("physics", users={f"{account_name(OVERFLOW_ID)}@physics": 1})
    assert code_of(f, linux(*ok, (ACL_USER, 4, OVERFLOW_ID)), nobody, None) == errno.EINVAL
    acl = f(linux(*ok, (ACL_USER, 4, OVERFLOW_ID)), IDMAP, None)
    assert acl is not None and acl.named[0].name == IDMAP.principal(OVERFLOW_ID)
    # uid 0's grid name (root@physics) is mapped to another uid: 0 names nobody here
    assert code_of(f, linux(*ok, (ACL_USER, 4, 0)), IDMAP, None) == errno.EINVAL
    # not a valid ACL (named entry without mask)
    assert code_of(f, linux(ok[0], ok[1], ok[3], (ACL_USER, 4, 1002)), IDMAP, None) == (
        errno.EINVAL
    )


def test_text_form() -> None:
    acl = parse("u::rw,u:bob@physics:r,g::r,m::r,o::-")
    text = acl_xattr.text_of(acl, "alice@physics", "users@physics")
    assert text.decode().splitlines()[:3] == [
        "# owner: alice@physics", "# group: users@physics", "user::rw-"
    ]
    assert acl_xattr.from_text(text) == acl
    assert acl_xattr.from_text(b"") is None
    assert code_of(acl_xattr.from_text, b"\xff") == errno.EINVAL
    assert code_of(acl_xattr.from_text, b"user:bob@physics:r") == errno.EINVAL  # incomplete


# ------------------------------------------------------------------ over a namespace
ALICE = Identity("alice@physics", "physics", Kind.USER, Role.STANDARD, ("users@physics",),
                 b"\0" * 32)
BOB = Identity("bob@physics", "physics", Kind.USER, Role.STANDARD, ("users@physics",),
               b"\0" * 32)
V = "vol"


class NsSession:
    """The calls of ``Session`` that acl_xattr makes, served by a Namespace."""

    def __init__(self, ns: Namespace, who: Identity) -> None:
        self.ns, self.who = ns, who

    async def getattr(self, ino: int) -> Attr:
        return self.ns.getattr(self.who, V, ino)

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        return self.ns.getxattr(self.who, V, ino, name)

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        self.ns.setxattr(self.who, V, ino, name, value, flags)

    async def removexattr(self, ino: int, name: bytes) -> None:
        self.ns.removexattr(self.who, V, ino, name)


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Namespace]:
    store = Store.open(tmp_path / "mrc.db")
    n = Namespace(store)
    root = Identity("root@physics", "physics", Kind.USER, Role.SUPER, (), b"\0" * 32)
    n.create_volume(root, V, owner="alice@physics", group="users@physics", mode=0o755,
                    striping=StripingPolicy())
    yield n
    assert fsck.check(store) == []
    store.close()


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        with trio.fail_after(30):
            return await fn()

    return trio.run(main)


def test_glue_over_a_namespace(ns: Namespace) -> None:
    xloc = XLocSet(1, [Replica(["osd"], StripingPolicy())])
    f = ns.create(ALICE, V, ROOT_INO, b"f", 0o640, os.O_CREAT | os.O_WRONLY, 0, xloc)[0].ino
    alice = cast(Session, NsSession(ns, ALICE))
    bob = cast(Session, NsSession(ns, BOB))
    get = acl_xattr.getxattr
    # no ACL: Linux's form is absent, the text form shows the mode's
    with pytest.raises(XfsError) as info:
        run(lambda: get(alice, IDMAP, f, acls.ACCESS))
    assert info.value.code == errno.ENODATA
    text = run(lambda: get(bob, IDMAP, f, acl_xattr.TEXT_ACCESS)).decode()
    assert text == "# owner: alice@physics\n# group: users@physics\n" \
                   "user::rw-\ngroup::r--\nother::---\n"
    # setfacl -m u:bob:rw, in Linux's form
    value = linux((0x01, 6, UNDEF), (ACL_USER, 6, 1002), (0x04, 4, UNDEF), (0x10, 6, UNDEF),
                  (0x20, 0, UNDEF))
    run(lambda: acl_xattr.setxattr(alice, IDMAP, f, acls.ACCESS, value))
    assert run(lambda: get(bob, IDMAP, f, acls.ACCESS)) == value
    assert ns.getattr(ALICE, V, f).mode & 0o777 == 0o660
    assert "user:bob@physics:rw-" in run(lambda: get(bob, IDMAP, f, acl_xattr.TEXT_ACCESS)).decode()
    # bob is no owner
    with pytest.raises(XfsError) as info:
        run(lambda: acl_xattr.setxattr(bob, IDMAP, f, acl_xattr.TEXT_ACCESS, b"u::rwx,g::-,o::-"))
    assert info.value.code == errno.EPERM
    # the text form sets the whole ACL; with no entries it removes it
    run(lambda: acl_xattr.setxattr(alice, IDMAP, f, acl_xattr.TEXT_ACCESS,
                                   b"user::rw-\nuser:zed@chem:r\ngroup::-\nmask::r\nother::-\n"))
    assert run(lambda: get(alice, IDMAP, f, acls.ACCESS)) == linux(
        (0x01, 6, UNDEF), (ACL_USER, 4, OVERFLOW_ID), (0x04, 0, UNDEF), (0x10, 4, UNDEF),
        (0x20, 0, UNDEF))
    # setfacl -m u:bob:r on top keeps zed@chem through the overflow entry
    value = linux((0x01, 6, UNDEF), (ACL_USER, 4, 1002), (ACL_USER, 4, OVERFLOW_ID),
                  (0x04, 0, UNDEF), (0x10, 4, UNDEF), (0x20, 0, UNDEF))
    run(lambda: acl_xattr.setxattr(alice, IDMAP, f, acls.ACCESS, value))
    assert ns.getxattr(ALICE, V, f, acls.ACCESS) == acls.encode(
        parse("u::rw,u:bob@physics:r,u:zed@chem:r,g::-,m::r,o::-")
    )
    run(lambda: acl_xattr.setxattr(alice, IDMAP, f, acl_xattr.TEXT_ACCESS, b"# nothing\n"))
    with pytest.raises(XfsError) as info:
        run(lambda: get(alice, IDMAP, f, acls.ACCESS))
    assert info.value.code == errno.ENODATA
    # default ACLs, on the root directory
    run(lambda: acl_xattr.setxattr(alice, IDMAP, ROOT_INO, acl_xattr.TEXT_DEFAULT,
                                   b"u::rwx,g::rx,o::-"))
    assert run(lambda: get(bob, IDMAP, ROOT_INO, acl_xattr.TEXT_DEFAULT)) == (
        b"user::rwx\ngroup::r-x\nother::---\n"
    )
    run(lambda: acl_xattr.removexattr(alice, ROOT_INO, acl_xattr.TEXT_DEFAULT))
    with pytest.raises(XfsError) as info:
        run(lambda: get(bob, IDMAP, ROOT_INO, acl_xattr.TEXT_DEFAULT))
    assert info.value.code == errno.ENODATA
