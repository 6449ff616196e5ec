"""Attack: reaching an inode by its number where a path walk would be refused.

Alice keeps a 0644 file in her 0700 directory, and a file in a 2770 directory of group
proj. Bob (not in proj), and chem's super user, know the inode numbers (they are
sequential) and call every MRC method that names an inode with them: each is refused
with EACCES and audited, as a path walk without search permission would be. Then the
answer follows every change that opens or closes the way: chmod of a directory, a
rename that moves a subtree, a second link in a directory bob may search, and a file
bob opened before the way was closed (as a file descriptor keeps working).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import PKI
from tests.rpc.ingrid import Grid, assert_denied_and_audited, open_grid, run_within
from xfs.common.ca import CertPaths
from xfs.common.rpc import Pool
from xfs.mrc import acl as acls
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    Access,
    Append,
    Close,
    Create,
    CreateMany,
    Delegate,
    DirLeaseAsk,
    Empty,
    Gone,
    Ino,
    InoAsk,
    Link,
    LockArgs,
    Lookup,
    MkNod,
    NewFile,
    Open,
    ReadDir,
    Remove,
    Rename,
    SetAttr,
    Symlink,
    UnlinkMany,
    UpdateSize,
    VolumeCreate,
    XattrGet,
    XattrSet,
)
from xfs.proto.records import Attr, Kind, Role, StripingPolicy, XCap

VOLUME = "home"
ROOT = 1
REASON = "may not search a directory on every path to it"


class Mrc:
    """Calls to the MRC of one grid."""

    address = ""

    def __call__(self, pool: Pool, method: Any, request: Any) -> Awaitable[Any]:
        return pool.call(self.address, method, request, expect=Kind.MRC)


mrc = Mrc()  # pointed at the grid of the running test


@dataclass
class Tree:
    """What alice made: private (0700) holds f (0644), l (a symlink), sub (0755) with
    g and the empty directory d; team (2770, group proj) holds t; open (0755) holds
    both, also linked as private/both."""

    private: Attr
    f: Attr
    link: Attr
    sub: Attr
    g: Attr
    d: Attr
    team: Attr
    t: Attr
    open: Attr
    both: Attr


async def make_tree(pool: Pool) -> Tree:
    async def mkdir(parent: int, name: bytes, mode: int) -> Attr:
        attr: Attr = await mrc(pool, MRC.mkdir, MkNod(VOLUME, parent, name, stat.S_IFDIR | mode))
        return attr

    async def create(parent: int, name: bytes, mode: int) -> Attr:
        layout = await mrc(pool, MRC.create, Create(VOLUME, parent, name, stat.S_IFREG | mode,
                                                    os.O_CREAT | os.O_EXCL | os.O_RDWR))
        attr: Attr = layout.attr
        return attr

    private = await mkdir(ROOT, b"private", 0o700)
    f = await create(private.ino, b"f", 0o644)
    link = await mrc(pool, MRC.symlink, Symlink(VOLUME, private.ino, b"l", b"f"))
    sub = await mkdir(private.ino, b"sub", 0o755)
    g = await create(sub.ino, b"g", 0o666)
    d = await mkdir(sub.ino, b"d", 0o777)
    team = await mkdir(ROOT, b"team", 0o770)
    await mrc(pool, MRC.setattr, SetAttr(VOLUME, team.ino, group="proj@physics"))
    await mrc(pool, MRC.setattr, SetAttr(VOLUME, team.ino, mode=0o2770))
    t = await create(team.ino, b"t", 0o664)
    opened = await mkdir(ROOT, b"open", 0o755)
    both = await create(opened.ino, b"both", 0o644)
    await mrc(pool, MRC.link, Link(VOLUME, both.ino, private.ino, b"both"))
    return Tree(private, f, link, sub, g, d, team, t, opened, both)


def calls(
    tree: Tree, client: str, first_ino: int, own: XCap | None = None
) -> dict[str, Callable[[Pool], Awaitable[Any]]]:
    """Every MRC method that names an inode, aimed at inodes under ``private`` (with
    ``own``, the caller's write XCap of a file of its own, also ``update_size``). Not
    here: ``close``, ``close_files``, ``lease_return``, ``dir_lease_return`` and
    ``release_locks``, which only end the caller's own opens, leases and locks."""
    f, sub = tree.f.ino, tree.sub.ino
    lock = LockArgs(VOLUME, f, client, 7, "posix", "read", 0, 10)
    new = NewFile(sub, b"queued", first_ino, 0o644, os.O_RDWR, 0, time.time_ns())
    return {
        "getattr": lambda p: mrc(p, MRC.getattr, Ino(VOLUME, f)),
        "access": lambda p: mrc(p, MRC.access, Access(VOLUME, f, os.R_OK)),
        "readlink": lambda p: mrc(p, MRC.readlink, Ino(VOLUME, tree.link.ino)),
        "readdir": lambda p: mrc(p, MRC.readdir, ReadDir(VOLUME, sub)),
        "lookup": lambda p: mrc(p, MRC.lookup, Lookup(VOLUME, sub, b"g")),
        "open": lambda p: mrc(p, MRC.open, Open(VOLUME, f, os.O_RDONLY, client)),
        "setattr": lambda p: mrc(p, MRC.setattr, SetAttr(VOLUME, tree.g.ino, atime_now=True,
                                                         mtime_now=True)),
        "create": lambda p: mrc(p, MRC.create, Create(VOLUME, sub, b"new", stat.S_IFREG | 0o644,
                                                      os.O_CREAT | os.O_RDWR)),
        "mknod": lambda p: mrc(p, MRC.mknod, MkNod(VOLUME, sub, b"fifo", stat.S_IFIFO | 0o644)),
        "mkdir": lambda p: mrc(p, MRC.mkdir, MkNod(VOLUME, tree.d.ino, b"x", stat.S_IFDIR | 0o755)),
        "symlink": lambda p: mrc(p, MRC.symlink, Symlink(VOLUME, tree.d.ino, b"s", b"g")),
        "link": lambda p: mrc(p, MRC.link, Link(VOLUME, tree.g.ino, tree.open.ino, b"stolen")),
        "unlink": lambda p: mrc(p, MRC.unlink, Remove(VOLUME, sub, b"g")),
        "rmdir": lambda p: mrc(p, MRC.rmdir, Remove(VOLUME, sub, b"d")),
        "rename": lambda p: mrc(p, MRC.rename, Rename(VOLUME, sub, b"g", tree.open.ino, b"g")),
        "getxattr": lambda p: mrc(p, MRC.getxattr, XattrGet(VOLUME, f, b"user.k")),
        "listxattr": lambda p: mrc(p, MRC.listxattr, Ino(VOLUME, f)),
        "setxattr": lambda p: mrc(p, MRC.setxattr, XattrSet(VOLUME, tree.g.ino, b"user.k",
                                                            b"v")),
        "removexattr": lambda p: mrc(p, MRC.removexattr, XattrGet(VOLUME, tree.g.ino,
                                                                  b"user.k")),
        "lock": lambda p: mrc(p, MRC.lock, lock),
        "test_lock": lambda p: mrc(p, MRC.test_lock, lock),
        "append": lambda p: mrc(p, MRC.append, Append(VOLUME, tree.g.ino, client, 10)),
        "dir_lease": lambda p: mrc(p, MRC.dir_lease, DirLeaseAsk(VOLUME, tree.d.ino, client)),
        "delegate": lambda p: mrc(p, MRC.delegate, Delegate(VOLUME, sub, "w@physics", 60)),
        "create_many": lambda p: one(mrc(p, MRC.create_many, CreateMany(VOLUME, client, [new]))),
        "unlink_many": lambda p: one(mrc(p, MRC.unlink_many, UnlinkMany(
            VOLUME, client, [Gone(sub, b"g", tree.g.ino)]))),
    } | ({} if own is None else {
        "update_size": lambda p: mrc(p, MRC.update_size, UpdateSize(VOLUME, f, 1 << 30, own)),
    })


async def one(batch: Awaitable[Any]) -> None:
    """The one file of a batch call, raised as its error."""
    (made,) = (await batch).files
    if made.error:
        raise XfsError(made.error, made.message)


def users(pki: PKI) -> dict[str, CertPaths]:
    return {
        "alice": pki.user("alice", groups=("alice", "proj")),
        "bob": pki.user("bob"),
        "dave": pki.user("dave", groups=("dave", "proj")),
        "carol": pki.user("carol", Role.SUPER, vo_ca=pki.other_vo_ca),
    }


async def volume(grid: Grid) -> None:
    async with grid.client(grid.root_user) as admin:
        await admin.call(grid.mrc_address, MRC.volume_create,
                         VolumeCreate(VOLUME, owner="alice@physics", mode=0o777,
                                      striping=StripingPolicy(4096, 1)),
                         expect=Kind.MRC)


async def refused(grid: Grid, call: Awaitable[Any], actor: str, action: str,
                  still: Callable[[], Awaitable[None]]) -> None:
    await assert_denied_and_audited(grid, call, actor=actor, action=f"mrc.{action}/",
                                    code=errno.EACCES, reason=REASON, service="mrc",
                                    still_serves=still)


@asynccontextmanager
async def alices_tree(
    pki: PKI, tmp_path: Path, who: dict[str, CertPaths]
) -> AsyncIterator[tuple[Grid, Pool, Tree, Callable[[], Awaitable[None]]]]:
    """A grid with alice's tree; yields it, her connection, the tree, and a check that
    she is still served."""
    async with open_grid(pki, tmp_path, osds=1) as grid:
        mrc.address = grid.mrc_address
        await volume(grid)
        async with grid.client(who["alice"]) as alice:
            tree = await make_tree(alice)

            async def alice_still_served() -> None:
                attr = await mrc(alice, MRC.getattr, Ino(VOLUME, tree.f.ino))
                assert attr.ino == tree.f.ino

            yield grid, alice, tree, alice_still_served


def test_every_method_naming_an_inode_walks_the_path(pki: PKI, tmp_path: Path) -> None:
    who = users(pki)

    async def main() -> None:
        async with alices_tree(pki, tmp_path, who) as (grid, alice, tree, alice_still_served):

            for name, principal in (("bob", "bob@physics"), ("carol", "carol@chem")):
                async with grid.client(who[name]) as pool:
                    client = (await mrc(pool, MRC.client_open, Empty())).client
                    first = (await mrc(pool, MRC.reserve_inos, InoAsk(VOLUME, client, 1))).first
                    own = await mrc(pool, MRC.create, Create(
                        VOLUME, ROOT, f"{name}-own".encode(), stat.S_IFREG | 0o600,
                        os.O_CREAT | os.O_EXCL | os.O_RDWR))
                    for action, call in calls(tree, client, first, own.xcap).items():
                        await refused(grid, call(pool), principal, action, alice_still_served)
                    # the group directory: bob is not in proj (its own inode is
                    # reached, through the 0777 root; what is in it is not)
                    team = await mrc(pool, MRC.getattr, Ino(VOLUME, tree.team.ino))
                    assert team.ino == tree.team.ino
                    await refused(grid, mrc(pool, MRC.getattr, Ino(VOLUME, tree.t.ino)),
                                  principal, "getattr", alice_still_served)
            # nothing bob tried changed anything
            entries = await mrc(alice, MRC.readdir, ReadDir(VOLUME, tree.sub.ino))
            assert sorted(e.name for e in entries.entries) == [b"d", b"g"]
            # alice herself, and dave of group proj, reach what is theirs to reach
            for action, call in calls(tree, "", 0).items():
                if action in ("getattr", "access", "readlink", "readdir", "lookup",
                              "getxattr", "listxattr"):
                    try:
                        await call(alice)
                    except XfsError as e:
                        assert e.code == errno.ENODATA and action == "getxattr", e
            async with grid.client(who["dave"]) as dave:
                attr = await mrc(dave, MRC.getattr, Ino(VOLUME, tree.t.ino))
                assert attr.ino == tree.t.ino
                await refused(grid, mrc(dave, MRC.getattr, Ino(VOLUME, tree.f.ino)),
                              "dave@physics", "getattr", alice_still_served)

    run_within(60, main)


def test_the_answer_follows_every_change_of_the_way(pki: PKI, tmp_path: Path) -> None:
    who = users(pki)

    async def main() -> None:
        async with alices_tree(pki, tmp_path, who) as (grid, alice, tree, alice_still_served), \
                grid.client(who["bob"]) as bob:

            async def bob_reaches(ino: int) -> bool:
                try:
                    await mrc(bob, MRC.getattr, Ino(VOLUME, ino))
                except XfsError as e:
                    assert e.code == errno.EACCES and REASON in e.message, e
                    return False
                return True

            # a second link in a directory bob may search is a way in
            assert await bob_reaches(tree.both.ino)
            assert not await bob_reaches(tree.f.ino)
            # chmod of the directory opens and closes the way (the cache follows)
            await mrc(alice, MRC.setattr, SetAttr(VOLUME, tree.private.ino, mode=0o711))
            assert await bob_reaches(tree.f.ino) and await bob_reaches(tree.g.ino)
            assert await bob_reaches(tree.sub.ino)  # (a directory: remembered reached)
            await mrc(alice, MRC.setattr, SetAttr(VOLUME, tree.private.ino, mode=0o700))
            assert not await bob_reaches(tree.f.ino) and not await bob_reaches(tree.g.ino)
            assert not await bob_reaches(tree.sub.ino)
            # an ACL entry for bob does too
            parsed = acls.parse("u::rwx,u:bob@physics:--x,g::---,m::--x,o::---")
            assert parsed is not None
            acl = acls.encode(parsed)
            await mrc(alice, MRC.setxattr, XattrSet(VOLUME, tree.private.ino,
                                                    b"system.posix_acl_access", acl))
            assert await bob_reaches(tree.g.ino)
            await mrc(alice, MRC.removexattr, XattrGet(VOLUME, tree.private.ino,
                                                       b"system.posix_acl_access"))
            assert not await bob_reaches(tree.g.ino)
            # a rename that moves the subtree out, and back in
            await mrc(alice, MRC.rename, Rename(VOLUME, tree.private.ino, b"sub",
                                                tree.open.ino, b"sub"))
            assert await bob_reaches(tree.g.ino) and await bob_reaches(tree.d.ino)
            await mrc(alice, MRC.rename, Rename(VOLUME, tree.open.ino, b"sub",
                                                tree.private.ino, b"sub"))
            assert not await bob_reaches(tree.g.ino) and not await bob_reaches(tree.d.ino)
            # what bob opened while he could reach it stays his to use, as a
            # descriptor does; once he closes it, the way is shut again
            client = (await mrc(bob, MRC.client_open, Empty())).client
            layout = await mrc(bob, MRC.open, Open(VOLUME, tree.both.ino, os.O_RDONLY,
                                                  client))
            await mrc(alice, MRC.setattr, SetAttr(VOLUME, tree.open.ino, mode=0o700))
            assert await bob_reaches(tree.both.ino)
            renewed = await mrc(bob, MRC.open, Open(VOLUME, tree.both.ino, os.O_RDONLY,
                                                   client))
            assert renewed.xcap.ino == layout.xcap.ino
            await mrc(bob, MRC.close, Close(VOLUME, tree.both.ino, client))
            await refused(grid, mrc(bob, MRC.getattr, Ino(VOLUME, tree.both.ino)),
                          "bob@physics", "getattr", alice_still_served)

    run_within(60, main)
