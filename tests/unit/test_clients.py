"""Client leases, open files, orphans, O_APPEND and locks of the MRC (xfs.mrc.clients),
over a real SQLite store with a clock the tests move by hand.

Every test ends with fsck of the store (the ``store`` fixture), the oracle of its
invariants.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from tests.unit.mrc_world import BOB, ROOT, V, fsck_checked_store, ident, raises
from xfs.mrc import fsck
from xfs.mrc.clients import Ended
from xfs.mrc.handlers import MRCHandlers
from xfs.mrc.leases import RECALL_WAIT, LeaseSweeper, LockWaiters
from xfs.mrc.locks import EOF, FLOCK, POSIX, READ, UNLOCK, WRITE, Held, Request
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.sql import MetaStore
from xfs.mrc.store import FORMAT_VERSION, Store
from xfs.mrc.xcaps import XCapIssuer
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    Append,
    ClientId,
    Close,
    Ino,
    LeaseReturn,
    LockArgs,
    LockHolder,
    LockReply,
    Open,
    SetAttr,
)
from xfs.proto.records import (
    ROOT_INO,
    Identity,
    Replica,
    StripingPolicy,
    XLocSet,
)

LEASE = 30 * 10**9
SEC = 10**9


ALICE = ident("alice@physics", "users@physics")  # (no personal group here)
XLOC = XLocSet(version=1, replicas=[Replica(osds=["osd-1"], striping=StripingPolicy())])


class Clock:
    """Nanoseconds that move only when a test says so (or, once ``follow_trio`` was
    called, with trio's clock: the autojump clock of the trio tests)."""

    def __init__(self) -> None:
        self.t = 1_700_000_000 * SEC
        self._trio_base: float | None = None

    def __call__(self) -> int:
        if self._trio_base is not None:
            return self.t + int((trio.current_time() - self._trio_base) * SEC)
        return self.t

    def follow_trio(self) -> None:
        self._trio_base = trio.current_time()

    def advance(self, ns: int) -> None:
        self.t += ns


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_spec: str | Path, clock: Clock) -> Iterator[MetaStore]:
    yield from fsck_checked_store(store_spec, clock)


@pytest.fixture
def ns(store: Store) -> Namespace:
    n = Namespace(store)
    n.create_volume(ROOT, V, owner="alice@physics", group="users@physics", mode=0o777)
    return n


def gone(ns: Namespace, ino: int) -> None:
    """The inode is no more: no row, and asking for it by number fails."""
    with ns._store.read() as cur:
        assert cur.execute("SELECT 1 FROM inodes WHERE ino = ?", (ino,)).fetchone() is None
    with pytest.raises(XfsError) as info:
        ns.getattr(ALICE, V, ino)
    assert info.value.code in (errno.ENOENT, errno.ESTALE)


def create(ns: Namespace, name: bytes, client: str | None, who: Identity = ALICE,
           flags: int = os.O_RDWR | os.O_CREAT) -> int:
    return ns.create(who, V, ROOT_INO, name, 0o666, flags, 0, XLOC, client)[0].ino


def lock(ns: Namespace, ino: int, client: str, mode: str, start: int = 0, end: int = EOF,
         owner: int = 1, family: str = POSIX, who: Identity = ALICE) -> Held | None:
    return ns.lock(who, V, ino, Request(client, owner, family, mode, start, end, 42))


def all_locks(store: Store) -> list[tuple[object, ...]]:
    with store.read() as cur:
        return cur.execute(
            "SELECT client, owner, family, mode, first, last FROM locks ORDER BY client, first"
        ).fetchall()


def opens(store: Store) -> list[tuple[object, ...]]:
    with store.read() as cur:
        return cur.execute("SELECT client, ino, writable FROM opens ORDER BY client").fetchall()


def vid(ns: Namespace) -> str:
    return ns.get_volume(V).id


def pending_inos(ns: Namespace) -> list[int]:
    return [ino for _, _, ino, _ in ns.pending_deletions(100)]


# ============================================================================ leases
def test_lease_open_renew_close(ns: Namespace, clock: Clock) -> None:
    c, expires = ns.client_open(ALICE, LEASE)
    assert expires == clock.t + LEASE
    other, _ = ns.client_open(ALICE, LEASE)
    assert other != c  # every mount its own lease
    ns.client_close(ALICE, other)
    clock.advance(LEASE - SEC)
    assert ns.client_renew(ALICE, c, LEASE) == clock.t + LEASE
    clock.advance(LEASE - SEC)  # past the first expiry, within the renewed one
    assert ns.expire_clients() == Ended(0, [], [])
    assert ns.client_close(ALICE, c) == Ended(1, [], [])
    raises(errno.ESTALE, ns.client_renew, ALICE, c, LEASE)
    raises(errno.ESTALE, ns.client_close, ALICE, c)


def test_lease_expiry(ns: Namespace, clock: Clock) -> None:
    c, expires = ns.client_open(ALICE, LEASE)
    other, _ = ns.client_open(BOB, 3 * LEASE)
    clock.t = expires  # the last instant of the lease
    assert ns.expire_clients().clients == 0
    clock.advance(1)
    assert ns.expire_clients() == Ended(1, [], [])
    raises(errno.ESTALE, ns.client_renew, ALICE, c, LEASE)
    assert ns.expire_clients() == Ended(0, [], [])
    ns.client_renew(BOB, other, LEASE)  # the other lease is untouched


def test_expired_lease_cannot_be_renewed_before_the_sweep(ns: Namespace, clock: Clock) -> None:
    """A lease not renewed before its expiry has ended, whether or not the sweeper has
    been by yet: renewing it must not bring it back."""
    c, expires = ns.client_open(ALICE, LEASE)
    clock.t = expires  # the last instant of the lease: still renewable
    assert ns.client_renew(ALICE, c, LEASE) == expires + LEASE
    clock.advance(LEASE + 1)
    raises(errno.ESTALE, ns.client_renew, ALICE, c, LEASE)
    assert ns.expire_clients().clients == 1


def test_lease_belongs_to_its_principal(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    raises(errno.EPERM, ns.client_renew, BOB, c, LEASE)
    raises(errno.EPERM, ns.client_close, BOB, c)
    raises(errno.EPERM, ns.close, BOB, V, ino, c)
    raises(errno.EPERM, ns.append, BOB, V, ino, c, 10)
    raises(errno.EPERM, ns.open, BOB, V, ino, os.O_RDONLY, c)
    raises(errno.EPERM, lock, ns, ino, c, WRITE, who=BOB)
    raises(errno.EPERM, ns.test_lock, BOB, V, ino, Request(c, 1, POSIX, WRITE, 0, EOF))
    raises(errno.EPERM, ns.release_owner, BOB, V, ino, c, 1, POSIX)
    assert opens(ns._store) == [(c, ino, 1)]  # nothing changed
    ns.client_close(ALICE, c)


def test_unknown_client_is_stale(ns: Namespace) -> None:
    raises(errno.ESTALE, create, ns, b"f", "no-such-client")
    assert ns.readdir(ALICE, V, ROOT_INO, 0, 10) == []  # the create was rolled back
    raises(errno.ESTALE, ns.open, ALICE, V, ROOT_INO, os.O_RDONLY, "no-such-client")


@contextlib.contextmanager
def store_with_an_open_file(path: Path, clock: Clock) -> Iterator[tuple[Namespace, str, int]]:
    """A store at ``path``, open while the block runs, holding alice's file "f" open on
    a client lease: (namespace, client, ino)."""
    with Store.open(path, clock) as s:
        ns = Namespace(s)
        ns.create_volume(ROOT, V, owner="alice@physics", mode=0o777)
        c, _ = ns.client_open(ALICE, LEASE)
        yield ns, c, create(ns, b"f", c)


def test_leases_survive_reopening_the_store(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "mrc.db"
    with store_with_an_open_file(path, clock) as (ns, c, ino):
        assert lock(ns, ino, c, WRITE, owner=2**64 - 1) is None
    with Store.open(path, clock) as s:
        ns = Namespace(s)
        ns.client_renew(ALICE, c, LEASE)
        found = ns.test_lock(ALICE, V, ino, Request(c, 5, POSIX, READ, 0, 0))
        assert found == Held(c, 2**64 - 1, POSIX, WRITE, 0, EOF, 42)
        assert fsck.check(s) == []


# ============================================================================ opens
def test_open_registers_and_close_unregisters(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", None)
    assert opens(ns._store) == []
    ns.open(ALICE, V, ino, os.O_RDONLY, c)
    assert opens(ns._store) == [(c, ino, 0)]
    ns.open(ALICE, V, ino, os.O_WRONLY, c)  # writable once, writable until closed
    ns.open(ALICE, V, ino, os.O_RDONLY, c)
    assert opens(ns._store) == [(c, ino, 1)]
    assert ns.close(ALICE, V, ino, c) is None
    assert opens(ns._store) == []
    assert ns.close(ALICE, V, ino, c) is None  # closing again changes nothing
    assert ns.getattr(ALICE, V, ino).nlink == 1


def test_failed_open_registers_nothing(ns: Namespace) -> None:
    c, _ = ns.client_open(BOB, LEASE)
    ino = ns.create(ALICE, V, ROOT_INO, b"private", 0o600, os.O_CREAT, 0, XLOC)[0].ino
    raises(errno.EACCES, ns.open, BOB, V, ino, os.O_RDONLY, c)
    assert opens(ns._store) == []


def test_unlinked_open_file_lives_until_close(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    ns.setxattr(ALICE, V, ino, b"user.k", b"v")
    ns.update_size(ALICE, V, ino, 1000)
    assert ns.unlink(ALICE, V, ROOT_INO, b"f") is None
    attr = ns.getattr(ALICE, V, ino)
    assert (attr.nlink, attr.size) == (0, 1000)
    raises(errno.ENOENT, ns.lookup, ALICE, V, ROOT_INO, b"f")
    assert ns.readdir(ALICE, V, ROOT_INO, 0, 10) == []
    assert ns.pending_count() == 0
    assert fsck.check(ns._store) == []  # an orphan is healthy while open
    # the orphan is still usable through its open handle
    ns.update_size(ALICE, V, ino, 2000)
    assert ns.getxattr(ALICE, V, ino, b"user.k") == b"v"
    pending = ns.close(ALICE, V, ino, c)
    assert pending is not None
    gone(ns, ino)
    assert pending_inos(ns) == [ino]
    assert ns.pending_deletions(1)[0][0] == pending


def test_orphan_freed_when_lease_expires(ns: Namespace, clock: Clock) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    ns.unlink(ALICE, V, ROOT_INO, b"f")
    clock.advance(LEASE + 1)
    ended = ns.expire_clients()
    assert ended.clients == 1 and ended.unlocked == []
    assert len(ended.pending) == 1
    gone(ns, ino)
    assert pending_inos(ns) == [ino]
    assert opens(ns._store) == []


def test_orphan_freed_when_client_says_goodbye(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    kept = create(ns, b"kept", c)
    ns.unlink(ALICE, V, ROOT_INO, b"f")
    ended = ns.client_close(ALICE, c)
    assert ended.clients == 1 and len(ended.pending) == 1
    assert pending_inos(ns) == [ino]
    assert ns.getattr(ALICE, V, kept).nlink == 1  # only the orphan went


def test_rename_over_open_file(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    victim = create(ns, b"victim", c)
    src = create(ns, b"src", None)
    assert ns.rename(ALICE, V, ROOT_INO, b"src", ROOT_INO, b"victim") is None
    assert ns.lookup(ALICE, V, ROOT_INO, b"victim").ino == src
    assert ns.getattr(ALICE, V, victim).nlink == 0
    assert ns.pending_count() == 0
    assert ns.close(ALICE, V, victim, c) is not None
    gone(ns, victim)
    assert pending_inos(ns) == [victim]


def test_orphan_stays_until_every_client_closed(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(BOB, LEASE)
    ino = create(ns, b"f", a)
    ns.open(BOB, V, ino, os.O_RDONLY, b)
    ns.unlink(ALICE, V, ROOT_INO, b"f")
    assert ns.close(ALICE, V, ino, a) is None
    assert ns.getattr(BOB, V, ino).nlink == 0
    assert fsck.check(ns._store) == []
    assert ns.close(BOB, V, ino, b) is not None
    gone(ns, ino)


def test_orphan_stays_until_every_lease_ended(ns: Namespace, clock: Clock) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(ALICE, 3 * LEASE)
    ino = create(ns, b"f", a)
    ns.open(ALICE, V, ino, os.O_RDONLY, b)
    ns.unlink(ALICE, V, ROOT_INO, b"f")
    clock.advance(LEASE + 1)
    assert ns.expire_clients() == Ended(1, [], [])
    assert ns.getattr(ALICE, V, ino).nlink == 0
    clock.advance(2 * LEASE)
    assert len(ns.expire_clients().pending) == 1
    gone(ns, ino)


def test_unlink_of_one_of_two_links_is_no_orphan(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    ns.link(ALICE, V, ino, ROOT_INO, b"g")
    ns.unlink(ALICE, V, ROOT_INO, b"f")
    assert ns.close(ALICE, V, ino, c) is None
    assert ns.getattr(ALICE, V, ino).nlink == 1
    assert ns.pending_count() == 0


def test_orphan_without_layout_leaves_no_pending_deletion(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = ns.mknod(ALICE, V, ROOT_INO, b"n", 0o644, 0, 0).ino
    ns.open(ALICE, V, ino, os.O_RDONLY, c)
    ns.unlink(ALICE, V, ROOT_INO, b"n")
    assert ns.getattr(ALICE, V, ino).nlink == 0
    assert ns.close(ALICE, V, ino, c) is None
    gone(ns, ino)
    assert ns.pending_count() == 0


def test_unlink_without_registration_frees_at_once(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", None)  # opened without a client: nothing registered
    assert ns.unlink(ALICE, V, ROOT_INO, b"f") is not None
    gone(ns, ino)
    raises(errno.EBADF, lock, ns, ino, c, WRITE)


# ============================================================================ append
def test_append_reservations_are_disjoint(ns: Namespace, clock: Clock) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(BOB, LEASE)
    ino = create(ns, b"log", a, flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    ns.open(BOB, V, ino, os.O_RDWR | os.O_APPEND, b)
    ns.update_size(ALICE, V, ino, 100)
    clock.advance(SEC)
    got = [
        ns.append(ALICE, V, ino, a, 10)[0],
        ns.append(BOB, V, ino, b, 5)[0],
        ns.append(ALICE, V, ino, a, 0)[0],
        ns.append(ALICE, V, ino, a, 7)[0],
    ]
    assert got == [100, 110, 115, 115]
    attr = ns.getattr(ALICE, V, ino)
    assert attr.size == 122
    assert attr.mtime_ns == attr.ctime_ns == clock.t


def test_append_needs_an_open_for_writing(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    other, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", None)
    raises(errno.EBADF, ns.append, ALICE, V, ino, c, 10)  # not open at all
    ns.open(ALICE, V, ino, os.O_RDONLY, c)
    raises(errno.EBADF, ns.append, ALICE, V, ino, c, 10)  # read only
    ns.open(ALICE, V, ino, os.O_WRONLY, other)
    raises(errno.EBADF, ns.append, ALICE, V, ino, c, 10)  # writable elsewhere only
    ns.open(ALICE, V, ino, os.O_WRONLY | os.O_APPEND, c)
    assert ns.append(ALICE, V, ino, c, 10) == (0, False)
    raises(errno.EINVAL, ns.append, ALICE, V, ino, c, -1)
    ns.close(ALICE, V, ino, c)
    raises(errno.EBADF, ns.append, ALICE, V, ino, c, 10)
    ns.client_close(ALICE, c)
    raises(errno.ESTALE, ns.append, ALICE, V, ino, c, 10)
    assert ns.getattr(ALICE, V, ino).size == 10


def test_append_to_an_orphan(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    ns.unlink(ALICE, V, ROOT_INO, b"f")
    assert ns.append(ALICE, V, ino, c, 4) == (0, False)
    assert ns.append(ALICE, V, ino, c, 4) == (4, False)
    ns.close(ALICE, V, ino, c)


# ============================================================================ locks
def test_locks_conflict_across_clients_and_owners(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(BOB, LEASE)
    ino = create(ns, b"f", a)
    ns.open(BOB, V, ino, os.O_RDWR, b)
    assert lock(ns, ino, a, WRITE, 0, 99, owner=7) is None
    held = Held(a, 7, POSIX, WRITE, 0, 99, 42)
    # the same owner number on another client is another owner
    assert lock(ns, ino, b, READ, 50, 50, owner=7, who=BOB) == held
    # another owner on the same client too
    assert lock(ns, ino, a, READ, 99, 200, owner=8) == held
    assert lock(ns, ino, b, WRITE, 100, EOF, owner=7, who=BOB) is None
    assert ns.test_lock(ALICE, V, ino, Request(a, 8, POSIX, READ, 0, 0)) == held
    assert ns.test_lock(BOB, V, ino, Request(b, 7, POSIX, WRITE, 100, 100)) is None
    # the refused requests changed nothing
    assert all_locks(ns._store) == sorted(
        [(a, 7, POSIX, WRITE, 0, 99), (b, 7, POSIX, WRITE, 100, EOF)]
    )
    # flock locks are another family: they do not meet the POSIX ones
    assert lock(ns, ino, a, WRITE, owner=9, family=FLOCK) is None
    assert lock(ns, ino, b, READ, owner=9, family=FLOCK, who=BOB) == Held(
        a, 9, FLOCK, WRITE, 0, EOF, 42
    )
    ns.close(ALICE, V, ino, a)
    ns.close(BOB, V, ino, b)


def test_lock_split_merge_and_unlock_through_the_store(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    owner = 2**63 + 5  # stored signed, read back unsigned
    assert lock(ns, ino, c, READ, 0, 99, owner=owner) is None
    assert lock(ns, ino, c, WRITE, 40, 59, owner=owner) is None
    assert lock(ns, ino, c, READ, 100, EOF, owner=owner) is None
    signed = owner - 2**64
    assert all_locks(ns._store) == [
        (c, signed, POSIX, READ, 0, 39),
        (c, signed, POSIX, WRITE, 40, 59),
        (c, signed, POSIX, READ, 60, EOF),
    ]
    assert lock(ns, ino, c, UNLOCK, 0, EOF, owner=owner) is None
    assert all_locks(ns._store) == []


def test_lock_needs_the_file_open_on_that_client(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    other, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", other)
    raises(errno.EBADF, lock, ns, ino, a, READ)
    raises(errno.EBADF, ns.test_lock, ALICE, V, ino, Request(a, 1, POSIX, READ, 0, EOF))
    raises(errno.EBADF, ns.release_owner, ALICE, V, ino, a, 1, POSIX)
    raises(errno.EINVAL, lock, ns, ino, other, READ, 10, 9)
    raises(errno.EINVAL, lock, ns, ino, other, READ, -1, 9)
    raises(errno.EINVAL, lock, ns, ino, other, READ, 0, EOF + 1)
    assert all_locks(ns._store) == []


def test_lock_of_ended_lease_is_stale(ns: Namespace, clock: Clock) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    ns.client_close(ALICE, c)
    raises(errno.ESTALE, lock, ns, ino, c, READ)
    raises(errno.ESTALE, ns.test_lock, ALICE, V, ino, Request(c, 1, POSIX, READ, 0, EOF))


def test_release_owner(ns: Namespace) -> None:
    c, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"f", c)
    lock(ns, ino, c, READ, 0, 9, owner=1)
    lock(ns, ino, c, READ, 20, 29, owner=1)
    lock(ns, ino, c, READ, owner=1, family=FLOCK)
    lock(ns, ino, c, READ, 0, 9, owner=2)
    assert ns.release_owner(ALICE, V, ino, c, 1, POSIX) is True
    assert ns.release_owner(ALICE, V, ino, c, 1, POSIX) is False
    assert sorted(r[1:4] for r in all_locks(ns._store)) == [(1, FLOCK, READ), (2, POSIX, READ)]
    assert ns.release_owner(ALICE, V, ino, c, 1, FLOCK) is True
    assert [r[1] for r in all_locks(ns._store)] == [2]


def test_locks_vanish_on_close_of_that_client_only(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(BOB, LEASE)
    ino = create(ns, b"f", a)
    other = create(ns, b"g", a)
    ns.open(BOB, V, ino, os.O_RDONLY, b)
    lock(ns, ino, a, READ, 0, 9)
    lock(ns, other, a, WRITE)
    lock(ns, ino, b, READ, 5, 19, who=BOB)
    ns.close(ALICE, V, ino, a)
    left = sorted([(a, 1, POSIX, WRITE, 0, EOF), (b, 1, POSIX, READ, 5, 19)])
    assert all_locks(ns._store) == left
    assert lock(ns, ino, b, WRITE, 0, 99, who=BOB) is None


def test_locks_vanish_when_client_ends(ns: Namespace, clock: Clock) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(BOB, 3 * LEASE)
    f = create(ns, b"f", a)
    g = create(ns, b"g", a)
    ns.open(BOB, V, f, os.O_RDONLY, b)
    lock(ns, f, a, READ, 0, 9)
    lock(ns, f, a, WRITE, 10, 19, owner=2)
    lock(ns, g, a, WRITE, family=FLOCK)
    lock(ns, f, b, READ, 0, 9, who=BOB)
    assert lock(ns, f, b, WRITE, 0, 19, who=BOB) is not None
    clock.advance(LEASE + 1)
    ended = ns.expire_clients()
    assert ended == Ended(1, [], sorted([(vid(ns), f), (vid(ns), g)]))
    assert all_locks(ns._store) == [(b, 1, POSIX, READ, 0, 9)]
    assert lock(ns, f, b, WRITE, 0, 19, who=BOB) is None
    ended = ns.client_close(BOB, b)
    assert ended == Ended(1, [], [(vid(ns), f)])
    assert all_locks(ns._store) == [] and opens(ns._store) == []


def test_locks_on_an_orphan_go_with_it(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(BOB, LEASE)
    ino = create(ns, b"f", a)
    ns.open(BOB, V, ino, os.O_RDONLY, b)
    lock(ns, ino, a, READ, 0, 9)
    lock(ns, ino, b, READ, 0, 9, who=BOB)
    ns.unlink(ALICE, V, ROOT_INO, b"f")
    assert lock(ns, ino, a, WRITE, 20, 29) is None  # still lockable while open
    ns.close(ALICE, V, ino, a)
    assert all_locks(ns._store) == [(b, 1, POSIX, READ, 0, 9)]
    assert ns.close(BOB, V, ino, b) is not None
    assert all_locks(ns._store) == []


# ============================================================================ format
def test_format_1_is_upgraded(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "mrc.db"
    with Store.open(path, clock) as s:
        ns = Namespace(s)
        ns.create_volume(ROOT, V, owner="alice@physics", mode=0o777)
        ino = create(ns, b"f", None)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "BEGIN; DROP TABLE dir_leases; DROP TABLE ino_ranges; DROP TABLE usage; DROP TABLE quotas; "
        "DROP TABLE locks; DROP TABLE opens; DROP TABLE clients; "
        "DROP TABLE delegations; "
        "DROP TABLE xcap_keys; DROP TABLE draining; "
        "UPDATE meta SET value = 1 WHERE key = 'format_version'; COMMIT;"
    )
    conn.close()
    with Store.open(path, clock) as s:
        with s.read() as cur:
            version = cur.execute(
                "SELECT value FROM meta WHERE key = 'format_version'"
            ).fetchone()[0]
            indexes = {r[0] for r in cur.execute("SELECT name FROM sqlite_master")}
        assert version == FORMAT_VERSION == 7
        assert {"clients", "opens", "locks", "opens_by_inode", "locks_by_inode"} <= indexes
        ns = Namespace(s)
        assert ns.getattr(ALICE, V, ino).nlink == 1  # the old data is there
        c, _ = ns.client_open(ALICE, LEASE)
        ns.open(ALICE, V, ino, os.O_RDWR, c)
        assert lock(ns, ino, c, WRITE) is None
        ns.unlink(ALICE, V, ROOT_INO, b"f")
        assert ns.close(ALICE, V, ino, c) is not None
        assert fsck.check(s) == []
    with Store.open(path, clock) as s:  # and opens again as a version 2 store
        assert fsck.check(s) == []


def test_format_3_is_upgraded(tmp_path: Path, clock: Clock) -> None:
    """Format 3 had no append leases: the column comes, and with it the leases."""
    path = tmp_path / "mrc.db"
    with store_with_an_open_file(path, clock) as (_, c, ino):
        pass
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "BEGIN; DROP TABLE dir_leases; DROP TABLE ino_ranges; DROP TABLE usage; DROP TABLE quotas; "
        "ALTER TABLE opens DROP COLUMN append_lease; "
        "DROP TABLE xcap_keys; DROP TABLE draining; "
        "UPDATE meta SET value = 3 WHERE key = 'format_version'; COMMIT;"
    )
    conn.close()
    with Store.open(path, clock) as s:
        with s.read() as cur:
            version = cur.execute(
                "SELECT value FROM meta WHERE key = 'format_version'"
            ).fetchone()[0]
        assert version == FORMAT_VERSION
        ns = Namespace(s)
        assert holders(ns, ino) == []  # the open of format 3 holds none
        assert ns.append(ALICE, V, ino, c, 3, lease=True) == (0, True)
        assert fsck.check(s) == []


def test_same_schema_after_upgrade_as_when_new(tmp_path: Path, clock: Clock) -> None:
    def schema(path: Path) -> set[tuple[str, str]]:
        conn = sqlite3.connect(path)
        try:
            return {(r[0], r[1]) for r in conn.execute("SELECT name, sql FROM sqlite_master")}
        finally:
            conn.close()

    Store.open(tmp_path / "new.db", clock).close()
    Store.open(tmp_path / "old.db", clock).close()
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.executescript(
        "DROP TABLE dir_leases; DROP TABLE ino_ranges; DROP TABLE usage; DROP TABLE quotas; "
        "DROP TABLE locks; DROP TABLE opens; DROP TABLE clients; DROP TABLE delegations; "
        "DROP TABLE xcap_keys; DROP TABLE draining; "
        "UPDATE meta SET value = 1 WHERE key = 'format_version';"
    )
    conn.close()
    Store.open(tmp_path / "old.db", clock).close()
    assert schema(tmp_path / "old.db") == schema(tmp_path / "new.db")


# ============================================================================ trio
def trio_run(fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``fn`` on trio's autojump clock, with an absolute (virtual) deadline."""

    async def main() -> None:
        with trio.fail_after(600):
            await fn()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_lock_waiters_event_taken_before_the_check_fires_later() -> None:
    w = LockWaiters()
    key, other = ("v", 2), ("v", 3)
    before = w.event(key)
    assert w.event(key) is before  # every waiter of the key shares it
    unrelated = w.event(other)
    w.changed([key])
    assert before.is_set() and not unrelated.is_set()
    after = w.event(key)  # taken after the change: waits for the next one
    assert after is not before and not after.is_set()
    w.changed([("v", 99)])  # nobody waits there: nothing happens
    w.changed([key, other])
    assert after.is_set() and unrelated.is_set()


def test_lock_waiters_wake_a_waiting_task() -> None:
    w = LockWaiters()
    key = ("v", 2)
    free = False
    checks: list[float] = []  # when the waiter looked at the "locks"

    async def waiter() -> None:
        while True:
            changed = w.event(key)  # (before the check: no await in between)
            checks.append(trio.current_time())
            if free:
                return
            await changed.wait()

    async def main() -> None:
        nonlocal free
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(1)
            w.changed([key])  # a change that does not free it: it waits again
            await trio.sleep(1)
            free = True  # the change and its signal, with no await between
            w.changed([key])
        assert [t - start for t in checks] == [0, pytest.approx(1), pytest.approx(2)]

    trio_run(main)


def test_sweep_ends_expired_leases(ns: Namespace, clock: Clock) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(BOB, 3 * LEASE)
    ino = create(ns, b"f", a)
    ns.open(BOB, V, ino, os.O_RDONLY, b)
    lock(ns, ino, a, WRITE)
    ns.unlink(ALICE, V, ROOT_INO, b"f")
    waiters = LockWaiters()
    deletions: list[int] = []
    sweeper = LeaseSweeper(ns, waiters, lambda: deletions.append(1), interval=1.0)
    event = waiters.event((vid(ns), ino))
    assert sweeper.sweep() == 0
    assert not event.is_set() and deletions == []
    clock.advance(LEASE + 1)
    assert sweeper.sweep() == 1
    assert event.is_set()  # the lock went: waiters are woken
    assert deletions == []  # the orphan is still open on b
    assert lock(ns, ino, b, WRITE, who=BOB) is None
    event = waiters.event((vid(ns), ino))
    clock.advance(2 * LEASE)
    assert sweeper.sweep() == 1
    assert event.is_set() and deletions == [1]
    gone(ns, ino)
    assert sweeper.sweep() == 0 and deletions == [1]


def test_sweeper_runs_until_stopped(ns: Namespace, clock: Clock) -> None:
    async def main() -> None:
        clock.follow_trio()
        c, _ = ns.client_open(ALICE, 5 * SEC)
        sweeper = LeaseSweeper(ns, LockWaiters(), lambda: None, interval=1.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sweeper.run)
            await trio.sleep(4)
            ns.client_renew(ALICE, c, 5 * SEC)
            await trio.sleep(4.5)
            ns.client_renew(ALICE, c, 5 * SEC)  # still alive at 8.5 s
            await trio.sleep(7)
            raises(errno.ESTALE, ns.client_renew, ALICE, c, 5 * SEC)
            with ns._store.read() as cur:
                assert cur.execute("SELECT count(*) FROM clients").fetchone()[0] == 0
            sweeper.stop()
        assert trio.current_time() == pytest.approx(15.5)

    trio_run(main)


def handlers(ns: Namespace, waiters: LockWaiters) -> MRCHandlers:
    # lock, close and client calls touch neither the OSD registry nor the XCap issuer
    return MRCHandlers(
        ns, cast(OSDRegistry, None), cast(XCapIssuer, None), lambda: None, "mrc-uuid",
        waiters=waiters, client_lease=LEASE / SEC,
    )


def lock_args(client: str, ino: int, mode: str, wait: float = 0.0) -> LockArgs:
    return LockArgs(V, ino, client, 1, POSIX, mode, 0, EOF, 7, wait)


@pytest.mark.parametrize("release", ["unlock", "close", "expiry"])
def test_waiting_lock_granted_when_holder_lets_go(
    ns: Namespace, clock: Clock, release: str
) -> None:
    """F_SETLKW through the handler: granted as soon as the holder unlocks, closes the
    file, or its lease is swept (the sweeper shares the handler's LockWaiters)."""
    waiters = LockWaiters()
    h = handlers(ns, waiters)

    async def main() -> None:
        clock.follow_trio()
        a, _ = ns.client_open(ALICE, 5 * SEC)
        b, _ = ns.client_open(BOB, 1000 * SEC)
        ino = create(ns, b"f", a)
        ns.open(BOB, V, ino, os.O_RDWR, b)
        assert await h.lock(ALICE, lock_args(a, ino, WRITE)) == LockReply(True)
        # (a pid means something only on its own node: other clients see 0)
        refused = LockReply(False, LockHolder(WRITE, 0, EOF, 0))
        assert await h.lock(BOB, lock_args(b, ino, READ)) == refused
        replies: list[tuple[float, LockReply]] = []

        async def wait_for_lock() -> None:
            reply = await h.lock(BOB, lock_args(b, ino, READ, wait=15.0))
            replies.append((trio.current_time(), reply))

        sweeper = LeaseSweeper(ns, waiters, lambda: None, interval=0.5)
        async with trio.open_nursery() as nursery:
            if release == "expiry":
                nursery.start_soon(sweeper.run)
            start = trio.current_time()
            nursery.start_soon(wait_for_lock)
            await trio.sleep(2)
            assert replies == []
            if release == "unlock":
                await h.lock(ALICE, lock_args(a, ino, UNLOCK))
            elif release == "close":
                await h.close(ALICE, Close(V, ino, a))
            while not replies:
                await trio.sleep(0.1)
            sweeper.stop()
        ((when, reply),) = replies
        assert reply == LockReply(True)
        elapsed = when - start
        if release == "expiry":
            assert 5 <= elapsed <= 6  # the lease ran out at 5 s, swept every 0.5 s
        else:
            assert elapsed == pytest.approx(2)

    trio_run(main)


def test_waiting_lock_gives_up_after_wait(ns: Namespace, clock: Clock) -> None:
    waiters = LockWaiters()
    h = handlers(ns, waiters)

    async def main() -> None:
        clock.follow_trio()
        a, _ = ns.client_open(ALICE, 1000 * SEC)
        b, _ = ns.client_open(BOB, 1000 * SEC)
        ino = create(ns, b"f", a)
        ns.open(BOB, V, ino, os.O_RDWR, b)
        await h.lock(ALICE, lock_args(a, ino, READ))
        start = trio.current_time()
        reply = await h.lock(BOB, lock_args(b, ino, WRITE, wait=3.0))
        assert reply == LockReply(False, LockHolder(READ, 0, EOF, 0))
        assert trio.current_time() - start == pytest.approx(3)
        # a read lock of the waiter itself does not wake it, but is granted at once
        assert await h.lock(BOB, lock_args(b, ino, READ, wait=3.0)) == LockReply(True)

    trio_run(main)


# ============================================================================ append leases
def holders(ns: Namespace, ino: int, but: str | None = None) -> list[str]:
    return ns.append_lease_holders(vid(ns), ino, but)


def test_append_lease_goes_to_the_only_writer(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(BOB, LEASE)
    ino = create(ns, b"log", a, flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    ns.open(BOB, V, ino, os.O_RDONLY, b)  # readers do not stand in the way
    assert ns.append(ALICE, V, ino, a, 10, lease=True) == (0, True)
    assert holders(ns, ino) == [a] and holders(ns, ino, but=a) == []
    ns.open(BOB, V, ino, os.O_WRONLY | os.O_APPEND, b)
    # the handler recalls first; appending past a held lease is refused, not done
    raises(errno.EAGAIN, ns.append, BOB, V, ino, b, 5, True)
    ns.update_size(ALICE, V, ino, 30)  # the holder reports its appends, then returns
    ns.lease_return(ALICE, vid(ns), ino, a)
    assert holders(ns, ino) == []
    assert ns.append(BOB, V, ino, b, 5, lease=True) == (30, False)  # a writes too
    assert ns.append(ALICE, V, ino, a, 5, lease=True) == (35, False)  # b writes too


def test_append_lease_ends_with_the_open_and_the_client(ns: Namespace, clock: Clock) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"log", a)
    assert ns.append(ALICE, V, ino, a, 1, lease=True) == (0, True)
    ns.close(ALICE, V, ino, a)
    assert holders(ns, ino) == []
    ns.open(ALICE, V, ino, os.O_WRONLY, a)
    assert ns.append(ALICE, V, ino, a, 1, lease=True) == (1, True)
    clock.advance(LEASE + 1)
    ended = ns.expire_clients()
    assert ended.clients == 1 and (vid(ns), ino) in ended.unlocked  # its waiters wake
    assert holders(ns, ino) == []
    raises(errno.ESTALE, ns.lease_return, ALICE, vid(ns), ino, a)


def test_append_lease_revoked(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    ino = create(ns, b"log", a)
    ns.append(ALICE, V, ino, a, 1, lease=True)
    assert ns.lease_revoke(vid(ns), ino, but=a) == []
    assert ns.lease_revoke(vid(ns), ino, but=None) == [a]
    assert holders(ns, ino) == []


def test_append_lease_recalled_through_the_handlers(ns: Namespace, clock: Clock) -> None:
    """A second client's append waits while the holder reports its appends and gives the
    lease back (asked through its lease_recalls poll); then it lands after them."""
    waiters = LockWaiters()
    h = handlers(ns, waiters)

    async def main() -> None:
        clock.follow_trio()
        a, _ = ns.client_open(ALICE, LEASE)
        b, _ = ns.client_open(BOB, LEASE)
        ino = create(ns, b"log", a)
        reply = await h.append(ALICE, Append(V, ino, a, 100, lease=True))
        assert (reply.offset, reply.leased) == (0, True)
        ns.open(BOB, V, ino, os.O_WRONLY | os.O_APPEND, b)
        # nothing asked of a yet: its poll waits POLL_WAIT, then answers "nothing"
        start = trio.current_time()
        assert (await h.lease_recalls(ALICE, ClientId(a))).files == []
        assert trio.current_time() - start == pytest.approx(5)
        got: list[tuple[float, int]] = []

        async def b_appends() -> None:
            reply = await h.append(BOB, Append(V, ino, b, 10, lease=True))
            got.append((trio.current_time(), reply.offset))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(b_appends)
            recalls = await h.lease_recalls(ALICE, ClientId(a))  # answers at once
            assert recalls.files == [Ino(V, ino)]
            await trio.sleep(1)  # the holder reports its local appends...
            assert got == []
            ns.update_size(ALICE, V, ino, 250)
            await h.lease_return(ALICE, LeaseReturn(V, ino, a))  # ...and gives it back
        assert got == [(pytest.approx(start + 6), 250)]
        raises(errno.EPERM, ns.check_client, BOB, a)

    trio_run(main)


def test_append_lease_not_given_back_is_ended(ns: Namespace, clock: Clock) -> None:
    """A holder that does not answer a recall loses the lease after RECALL_WAIT; the
    waiting append then goes on."""
    h = handlers(ns, LockWaiters())

    async def main() -> None:
        clock.follow_trio()
        a, _ = ns.client_open(ALICE, 1000 * SEC)
        b, _ = ns.client_open(BOB, LEASE)
        ino = create(ns, b"log", a)
        await h.append(ALICE, Append(V, ino, a, 100, lease=True))
        ns.open(BOB, V, ino, os.O_WRONLY, b)
        start = trio.current_time()
        reply = await h.append(BOB, Append(V, ino, b, 10, lease=True))
        assert reply.offset == 100 and not reply.leased
        assert trio.current_time() - start == pytest.approx(RECALL_WAIT)
        assert holders(ns, ino) == []

    trio_run(main)


def test_only_a_writer_makes_a_holder_give_its_lease_back(ns: Namespace, clock: Clock) -> None:
    """Bob may read alice's 0644 log but not write it: his attempts to open it for
    writing, truncate it or append to it are refused before any recall."""
    h = handlers(ns, LockWaiters())

    async def main() -> None:
        clock.follow_trio()
        a, _ = ns.client_open(ALICE, LEASE)
        b, _ = ns.client_open(BOB, LEASE)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        ino = ns.create(ALICE, V, ROOT_INO, b"log", 0o644, flags, 0, XLOC, a)[0].ino
        await h.append(ALICE, Append(V, ino, a, 10, lease=True))
        ns.open(BOB, V, ino, os.O_RDONLY, b)
        with trio.fail_after(1):  # (a recall would wait RECALL_WAIT)
            with pytest.raises(XfsError) as refused:
                await h.open(BOB, Open(V, ino, os.O_WRONLY, b))
            assert refused.value.code == errno.EACCES
            with pytest.raises(XfsError) as refused:
                await h.setattr(BOB, SetAttr(V, ino, size=0))
            assert refused.value.code == errno.EACCES
            with pytest.raises(XfsError) as refused:
                await h.append(BOB, Append(V, ino, b, 5))
            assert refused.value.code == errno.EBADF
        assert holders(ns, ino) == [a]
        assert await h._recaller.poll(a, timeout=0) == []  # nothing was asked of her

    trio_run(main)
