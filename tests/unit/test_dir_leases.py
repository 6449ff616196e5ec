"""Directory leases and reserved inode numbers of the MRC (xfs.mrc.dirleases), and the
recalls of its handlers, over a real SQLite store.

A client that made a directory may hold its lease and create files there without asking
first, with inode numbers reserved for it; the MRC recalls the lease before any other
client reads or changes the directory's entries (docs/design/leases.md, "Directory
leases"). Every test ends with fsck of the store.
"""

from __future__ import annotations

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
from xfs.mrc import acl as acls
from xfs.mrc import fsck
from xfs.mrc.dirleases import MAX_RANGES
from xfs.mrc.handlers import MRCHandlers
from xfs.mrc.leases import RECALL_WAIT, LeaseSweeper, LockWaiters
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.sql import MetaStore
from xfs.mrc.store import FORMAT_VERSION, Store
from xfs.mrc.xcaps import XCapIssuer
from xfs.proto.errors import XfsError
from xfs.proto.methods import ClientId, Ino, LeaseReturn, Lookup, ReadDir
from xfs.proto.records import ROOT_INO, Replica, StripingPolicy, XLocSet

SEC = 10**9
LEASE = 30 * SEC
ALICE = ident("alice@physics", "users@physics")
XLOC = XLocSet(version=1, replicas=[Replica(osds=["osd-1"], striping=StripingPolicy())])
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000 * SEC

    def __call__(self) -> int:
        return self.t


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


def mkdir(ns: Namespace, name: bytes = b"d", mode: int = 0o755) -> int:
    return ns.mkdir(ALICE, V, ROOT_INO, name, mode, 0).ino


def vid(ns: Namespace) -> str:
    return ns.get_volume(V).id


def leased_create(ns: Namespace, d: int, name: bytes, ino: int, client: str) -> int:
    attr, _, _ = ns.create(
        ALICE, V, d, name, 0o644, FLAGS, 0o022, XLOC, client, ino=ino, time_ns=ns._store.clock()
    )
    return attr.ino


def ranges(store: Store) -> list[tuple[object, ...]]:
    with store.read() as cur:
        return cur.execute("SELECT client, first, last FROM ino_ranges ORDER BY first").fetchall()


# ============================================================================ grants
def test_the_maker_gets_the_lease_and_nobody_else(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    b, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns)
    lease = ns.dir_lease_grant(ALICE, V, d, a)
    assert lease.granted
    assert (lease.owner, lease.group) == ("alice@physics", "users@physics")
    assert ns.dir_lease_grant(ALICE, V, d, a).granted  # asked again: still hers
    assert not ns.dir_lease_grant(ALICE, V, d, b).granted
    assert ns.dir_lease_holders(vid(ns), d, None) == [a]
    assert ns.dir_lease_holders(vid(ns), d, a) == []
    ns.dir_lease_return(ALICE, vid(ns), d, a)
    assert ns.dir_lease_holders(vid(ns), d, None) == []
    assert ns.dir_lease_grant(ALICE, V, d, b).granted


def test_no_lease_without_write_permission_or_under_a_default_acl(ns: Namespace) -> None:
    b, _ = ns.client_open(BOB, LEASE)
    d = mkdir(ns, mode=0o755)  # alice's: bob may not create in it
    assert not ns.dir_lease_grant(BOB, V, d, b).granted
    a, _ = ns.client_open(ALICE, LEASE)
    e = mkdir(ns, b"e", 0o777)
    ns.setxattr(ALICE, V, e, acls.DEFAULT, acls.encode(acls.from_mode(0o755)), 0)
    assert not ns.dir_lease_grant(ALICE, V, e, a).granted  # new files' modes would differ
    assert ns.dir_lease_holders(vid(ns), d, None) == ns.dir_lease_holders(vid(ns), e, None) == []
    raises(errno.EPERM, ns.dir_lease_grant, BOB, V, e, a)  # not bob's client lease


def test_a_lease_on_a_setgid_directory_gives_its_group(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns, mode=0o2777)
    ns.setattr(ROOT, V, d, group="team@physics")
    assert ns.dir_lease_grant(ALICE, V, d, a).group == "team@physics"


# ============================================================================ inode numbers
def test_reserved_numbers_are_used_once_in_order(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns)
    first, count = ns.reserve_inos(ALICE, V, a, 3)
    assert count == 3
    assert ranges(ns._store) == [(a, first, first + 2)]
    later = ns.mkdir(ALICE, V, ROOT_INO, b"later", 0o755, 0).ino
    assert later == first + 3  # cut from next_ino: never handed out twice
    assert leased_create(ns, d, b"x", first + 1, a) == first + 1
    assert ranges(ns._store) == [(a, first + 2, first + 2)]  # first is given up
    raises(errno.ESTALE, leased_create, ns, d, b"y", first, a)
    assert leased_create(ns, d, b"z", first + 2, a) == first + 2
    assert ranges(ns._store) == [(a, first + 3, first + 2)]  # used up, kept as proof
    # sent again after a lost reply: the same file, opened again
    assert leased_create(ns, d, b"x", first + 1, a) == first + 1
    assert ns.getattr(ALICE, V, first + 1).mode == 0o100644


def test_a_create_sent_again_cannot_open_a_file_the_client_did_not_make(
    ns: Namespace,
) -> None:
    """A file's inode number, learnt by a lookup, named in a create "sent again", must
    not open a file the caller may not write (it was not made with the caller's
    reserved numbers)."""
    a, _ = ns.client_open(BOB, LEASE)
    secret = ns.create(ROOT, V, ROOT_INO, b"secret", 0o600, FLAGS, 0, XLOC)[0].ino
    ns.reserve_inos(BOB, V, a, 4)
    raises(
        errno.EEXIST,
        ns.create,
        BOB,
        V,
        ROOT_INO,
        b"secret",
        0o644,
        os.O_RDWR,
        0,
        XLOC,
        a,
        ino=secret,
    )
    with ns._store.read() as cur:
        assert cur.execute("SELECT count(*) FROM opens").fetchone()[0] == 0


def test_a_taken_name_refuses_a_leased_create(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns)
    first, _ = ns.reserve_inos(ALICE, V, a, 2)
    ns.create(ALICE, V, d, b"x", 0o644, FLAGS, 0, XLOC, a)
    raises(errno.EEXIST, leased_create, ns, d, b"x", first, a)
    assert ranges(ns._store) == [(a, first, first + 1)]  # (nothing used)


def test_reservations_are_bounded_and_belong_to_their_principal(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    raises(errno.EINVAL, ns.reserve_inos, ALICE, V, a, 0)
    raises(errno.EINVAL, ns.reserve_inos, ALICE, V, a, 1 << 20)
    raises(errno.EPERM, ns.reserve_inos, BOB, V, a, 10)
    for _ in range(MAX_RANGES):
        ns.reserve_inos(ALICE, V, a, 10)
    raises(errno.EAGAIN, ns.reserve_inos, ALICE, V, a, 10)
    b, _ = ns.client_open(BOB, LEASE)
    first, _ = ns.reserve_inos(BOB, V, b, 1)
    d = ns.mkdir(BOB, V, ROOT_INO, b"bobs", 0o755, 0).ino
    attr, _, _ = ns.create(BOB, V, d, b"f", 0o644, FLAGS, 0, XLOC, b, ino=first)
    assert attr.owner == "bob@physics"
    raises(errno.ESTALE, ns.create, ALICE, V, ROOT_INO, b"g", 0o644, FLAGS, 0, XLOC, a, ino=first)


def test_a_client_time_is_taken_only_if_recent(ns: Namespace, clock: Clock) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns)
    first, _ = ns.reserve_inos(ALICE, V, a, 2)
    now = clock()
    t = ns.create(ALICE, V, d, b"x", 0o644, FLAGS, 0, XLOC, a, ino=first, time_ns=now - SEC)
    assert t[0].mtime_ns == t[0].ctime_ns == now - SEC
    t = ns.create(ALICE, V, d, b"y", 0o644, FLAGS, 0, XLOC, a, ino=first + 1, time_ns=now + SEC)
    assert t[0].mtime_ns == now  # from the future: the MRC's own


def test_leases_and_ranges_end_with_the_client(ns: Namespace, clock: Clock) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns)
    ns.dir_lease_grant(ALICE, V, d, a)
    ns.reserve_inos(ALICE, V, a, 5)
    clock.t += 2 * LEASE
    LeaseSweeper(ns, LockWaiters(), lambda: None, 1.0).sweep()
    assert ns.dir_lease_holders(vid(ns), d, None) == []
    assert ranges(ns._store) == []


def test_a_deleted_volume_takes_its_leases_and_ranges(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns)
    ns.dir_lease_grant(ALICE, V, d, a)
    ns.reserve_inos(ALICE, V, a, 5)
    ns.delete_volume(ROOT, V)
    assert ranges(ns._store) == []


def test_format_4_is_upgraded(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "mrc.db"
    with Store.open(path, clock) as s:
        Namespace(s).create_volume(ROOT, V, owner="alice@physics", mode=0o777)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "BEGIN; DROP TABLE dir_leases; DROP TABLE ino_ranges; DROP TABLE usage; DROP TABLE quotas; "
        "DROP TABLE xcap_keys; DROP TABLE draining; "
        "UPDATE meta SET value = 4 WHERE key = 'format_version'; COMMIT;"
    )
    conn.close()
    with Store.open(path, clock) as s:
        with s.read() as cur:
            version = cur.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[
                0
            ]
        assert version == FORMAT_VERSION == 7
        n = Namespace(s)
        a, _ = n.client_open(ALICE, LEASE)
        d = n.mkdir(ALICE, V, ROOT_INO, b"d", 0o755, 0).ino
        assert n.dir_lease_grant(ALICE, V, d, a).granted
        assert fsck.check(s) == []


def test_fsck_sees_a_lease_on_a_file_and_a_range_over_an_inode(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    f = ns.create(ALICE, V, ROOT_INO, b"f", 0o644, FLAGS, 0, XLOC, a)[0].ino
    v = vid(ns)
    with ns._store.transaction() as cur:
        cur.execute("INSERT INTO dir_leases VALUES (?, ?, ?)", (a, v, f))
        cur.execute("INSERT INTO ino_ranges VALUES (?, ?, ?, ?, ?)", (a, v, f, f, f))
    problems = fsck.check(ns._store)
    assert len(problems) == 2 and "no directory" in problems[0] and "reserved" in problems[1]
    with ns._store.transaction() as cur:
        cur.execute("DELETE FROM dir_leases")
        cur.execute("DELETE FROM ino_ranges")


# ============================================================================ recalls
def handlers(ns: Namespace, wait: float = RECALL_WAIT) -> MRCHandlers:
    # lookups, readdir and lease calls touch neither the OSD registry nor the XCap issuer
    return MRCHandlers(
        ns,
        cast(OSDRegistry, None),
        cast(XCapIssuer, None),
        lambda: None,
        "mrc-uuid",
        waiters=LockWaiters(),
        client_lease=LEASE / SEC,
        append_lease_wait=wait,
    )


def trio_run(fn: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        with trio.fail_after(600):
            await fn()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_another_clients_lookup_waits_for_the_holder(ns: Namespace) -> None:
    """Bob's lookup in alice's leased directory asks her for the lease back; it goes on
    once her queued create has landed and she returned the lease."""
    h = handlers(ns)

    async def main() -> None:
        a, _ = ns.client_open(ALICE, LEASE)
        b, _ = ns.client_open(BOB, LEASE)
        d = mkdir(ns, mode=0o777)
        assert ns.dir_lease_grant(ALICE, V, d, a).granted
        first, _ = ns.reserve_inos(ALICE, V, a, 1)
        got: list[tuple[float, int]] = []

        async def bob_looks() -> None:
            attr = await h.lookup(BOB, Lookup(V, d, b"x", b))
            got.append((trio.current_time(), attr.ino))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob_looks)
            start = trio.current_time()
            recalls = await h.lease_recalls(ALICE, ClientId(a))
            assert recalls.dirs == [Ino(V, d)] and recalls.files == []
            await trio.sleep(1)
            assert got == []
            leased_create(ns, d, b"x", first, a)  # (her queue, landing)
            await h.dir_lease_return(ALICE, LeaseReturn(V, d, a))
        assert got == [(pytest.approx(start + 1), first)]
        # her own lookups and listings (her client named) recall nothing
        assert ns.dir_lease_grant(ALICE, V, d, a).granted
        with trio.fail_after(1):
            await h.lookup(ALICE, Lookup(V, d, b"x", a))
            await h.readdir(ALICE, ReadDir(V, d, 0, 10, a))
        assert ns.dir_lease_holders(vid(ns), d, None) == [a]

    trio_run(main)


def test_a_holder_that_does_not_answer_loses_the_lease(ns: Namespace) -> None:
    h = handlers(ns)

    async def main() -> None:
        a, _ = ns.client_open(ALICE, LEASE)
        b, _ = ns.client_open(BOB, LEASE)
        d = mkdir(ns, mode=0o777)
        ns.dir_lease_grant(ALICE, V, d, a)
        start = trio.current_time()
        await h.readdir(BOB, ReadDir(V, d, 0, 10, b))
        assert trio.current_time() - start == pytest.approx(RECALL_WAIT)
        assert ns.dir_lease_holders(vid(ns), d, None) == []

    trio_run(main)


def test_only_a_caller_who_may_search_makes_the_holder_give_it_back(ns: Namespace) -> None:
    h = handlers(ns)

    async def main() -> None:
        a, _ = ns.client_open(ALICE, LEASE)
        b, _ = ns.client_open(BOB, LEASE)
        d = mkdir(ns, mode=0o700)
        ns.dir_lease_grant(ALICE, V, d, a)
        with trio.fail_after(1):
            with pytest.raises(XfsError) as refused:
                await h.lookup(BOB, Lookup(V, d, b"x", b))
            assert refused.value.code == errno.EACCES
        assert ns.dir_lease_holders(vid(ns), d, None) == [a]
        assert await h._recaller.poll(a, timeout=0) == []

    trio_run(main)


def test_removing_a_leased_directory_recalls_it_from_its_own_holder(ns: Namespace) -> None:
    """rmdir must see the holder's queued creates: the lease comes back first, even when
    the holder itself removes the directory."""
    h = handlers(ns)

    async def main() -> None:
        from xfs.proto.methods import Remove

        a, _ = ns.client_open(ALICE, LEASE)
        d = mkdir(ns, mode=0o777)
        ns.dir_lease_grant(ALICE, V, d, a)
        first, _ = ns.reserve_inos(ALICE, V, a, 1)
        outcome: list[int] = []

        async def remove() -> None:
            try:
                await h.rmdir(ALICE, Remove(V, ROOT_INO, b"d", a))
            except XfsError as e:
                outcome.append(e.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(remove)
            recalls = await h.lease_recalls(ALICE, ClientId(a))
            assert recalls.dirs == [Ino(V, d)]
            leased_create(ns, d, b"x", first, a)
            await h.dir_lease_return(ALICE, LeaseReturn(V, d, a))
        assert outcome == [errno.ENOTEMPTY]

    trio_run(main)


# ============================================================================ unlinks
def test_an_unlink_under_a_lease_names_its_inode_and_may_be_sent_again(ns: Namespace) -> None:
    a, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns)
    x = ns.create(ALICE, V, d, b"x", 0o644, FLAGS, 0, XLOC, a)[0].ino
    y = ns.create(ALICE, V, d, b"y", 0o644, FLAGS, 0, XLOC, a)[0].ino
    raises(errno.ESTALE, ns.unlink, ALICE, V, d, b"x", y)  # the name leads elsewhere
    ns.unlink(ALICE, V, d, b"x", x)
    assert ns.unlink(ALICE, V, d, b"x", x) is None  # sent again: gone already, done
    raises(errno.ENOENT, ns.lookup, ALICE, V, d, b"x")
    ns.close(ALICE, V, x, a)
    ns.close(ALICE, V, y, a)


def test_unlink_many_through_the_handlers(ns: Namespace) -> None:
    from xfs.proto.methods import Gone, UnlinkMany

    h = handlers(ns)

    async def main() -> None:
        a, _ = ns.client_open(ALICE, LEASE)
        d = mkdir(ns, mode=0o777)
        inos = [ns.create(ALICE, V, d, n, 0o644, FLAGS, 0, XLOC)[0].ino for n in (b"p", b"q")]
        gone = [Gone(d, b"p", inos[0]), Gone(d, b"q", inos[0]), Gone(d, b"p", inos[0])]
        reply = await h.unlink_many(ALICE, UnlinkMany(V, a, gone))
        assert [m.error for m in reply.files] == [0, errno.ESTALE, 0]
        assert [e.name for e in ns.readdir(ALICE, V, d, 0, 10)] == [b"q"]
        with pytest.raises(XfsError) as refused:
            await h.unlink_many(BOB, UnlinkMany(V, a, gone))  # not bob's client lease
        assert refused.value.code == errno.EPERM

    trio_run(main)


# ============================================================================ no OSD known
def test_a_leased_create_while_no_osd_is_known_is_kept_and_placed_at_open(
    ns: Namespace, store: Store
) -> None:
    """After an MRC restart no OSD counts as alive until it reports again: a create
    the client acknowledged already is made without a layout (not refused), and the
    first open places it."""
    import random

    from xfs.common.xcap import KeyRing
    from xfs.proto.methods import CreateMany, NewFile, Open

    registry = OSDRegistry(store, lambda: 1000.0, dead_after=30.0)
    xcaps = XCapIssuer(KeyRing.generate(), lambda: 1000.0, 60, may_hold=ns.may_hold)
    h = MRCHandlers(
        ns,
        registry,
        xcaps,
        lambda: None,
        "mrc-uuid",
        random.Random(1),
        waiters=LockWaiters(),
        client_lease=LEASE / SEC,
    )

    async def main() -> None:
        a, _ = ns.client_open(ALICE, LEASE)
        d = mkdir(ns, mode=0o777)
        first, _ = ns.reserve_inos(ALICE, V, a, 2)
        new = NewFile(d, b"x", first, 0o644, FLAGS, 0o022, ns._store.clock())
        reply = await h.create_many(ALICE, CreateMany(V, a, [new]))
        assert reply.files[0].error == 0 and reply.files[0].layout is None
        assert ns.lookup(ALICE, V, d, b"x").ino == first
        with pytest.raises(XfsError) as full:  # opened before any OSD reports: ENOSPC
            await h.open(ALICE, Open(V, first, os.O_RDWR, a))
        assert full.value.code == errno.ENOSPC
        registry.heartbeat("osd-1", "127.0.0.1:32640", 10 << 30, 100 << 30, {})
        layout = await h.open(ALICE, Open(V, first, os.O_RDWR, a))
        assert layout.xloc.replicas[0].osds == ["osd-1"] and layout.xcap.ino == first
        again = await h.open(ALICE, Open(V, first, os.O_RDONLY, a))
        assert again.xloc == layout.xloc  # placed once
        ns.close(ALICE, V, first, a)

    trio_run(main)


# ============================================================================ review mends
def test_only_the_owner_of_a_directory_gets_its_lease(ns: Namespace) -> None:
    """A lease held by a client that stops answering stalls others' calls on the
    directory: nobody gets one on a directory he shares but does not own."""
    b, _ = ns.client_open(BOB, LEASE)
    shared = mkdir(ns, b"shared", 0o777)  # alice's, open to all
    assert not ns.dir_lease_grant(BOB, V, shared, b).granted
    own = ns.mkdir(BOB, V, shared, b"bobs", 0o755, 0).ino
    assert ns.dir_lease_grant(BOB, V, own, b).granted


def test_a_holder_that_still_polls_keeps_its_lease_while_it_sends(ns: Namespace) -> None:
    """The holder is sending many queued creates: it polls, so its lease is not ended
    after RECALL_WAIT; the other client's call goes on when it gives the lease back.
    No new grant happens while that recall is under way."""
    h = handlers(ns)

    async def main() -> None:
        from xfs.proto.methods import DirLeaseAsk

        a, _ = ns.client_open(ALICE, LEASE)
        b, _ = ns.client_open(BOB, LEASE)
        d = mkdir(ns, mode=0o777)
        ns.dir_lease_grant(ALICE, V, d, a)
        done: list[float] = []

        async def bob_lists() -> None:
            await h.readdir(BOB, ReadDir(V, d, 0, 10, b))
            done.append(trio.current_time())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob_lists)
            while trio.current_time() - start < 2.5 * RECALL_WAIT:
                await h.lease_recalls(ALICE, ClientId(a))  # busy, and says so
                await trio.sleep(1)
                # her own lease asked for again: none is granted while the recall runs
                assert not (await h.dir_lease(ALICE, DirLeaseAsk(V, d, a))).granted
            assert done == [] and ns.dir_lease_holders(vid(ns), d, None) == [a]
            await h.dir_lease_return(ALICE, LeaseReturn(V, d, a))
        assert done and done[0] - start == pytest.approx(2.5 * RECALL_WAIT, abs=2)

    trio_run(main)


def test_a_client_id_spares_only_its_own_caller(ns: Namespace) -> None:
    """Bob naming alice's client in his lookup does not slip past her lease."""
    h = handlers(ns, wait=1.0)

    async def main() -> None:
        a, _ = ns.client_open(ALICE, LEASE)
        d = mkdir(ns, mode=0o777)
        ns.dir_lease_grant(ALICE, V, d, a)
        start = trio.current_time()
        with pytest.raises(XfsError):
            await h.lookup(BOB, Lookup(V, d, b"x", a))  # (ENOENT, after the recall)
        assert trio.current_time() - start == pytest.approx(1.0)  # she did not answer
        assert ns.dir_lease_holders(vid(ns), d, None) == []

    trio_run(main)


def test_client_leases_get_a_grace_period_at_the_mrcs_start(ns: Namespace, clock: Clock) -> None:
    """An MRC that was down longer than the lease does not end its clients' leases (and
    their directory leases and reserved numbers) at start: they get one more lease."""
    a, _ = ns.client_open(ALICE, LEASE)
    d = mkdir(ns)
    ns.dir_lease_grant(ALICE, V, d, a)
    ns.reserve_inos(ALICE, V, a, 5)
    clock.t += 3 * LEASE  # down that long
    assert ns.extend_clients(LEASE) == 1
    sweeper = LeaseSweeper(ns, LockWaiters(), lambda: None, 1.0)
    assert sweeper.sweep() == 0
    assert ns.dir_lease_holders(vid(ns), d, None) == [a] and len(ranges(ns._store)) == 1
    clock.t += LEASE + 1  # and it did not come back
    assert sweeper.sweep() == 1


# ============================================================================ one transaction
def test_a_create_many_batch_refuses_one_create_alone(ns: Namespace, store: Store) -> None:
    """A batch is one transaction, each create a savepoint of it: a refused create (a
    name taken) is undone alone, the ones around it land, and sending the batch again
    finds them made."""
    import random

    from xfs.common.xcap import KeyRing
    from xfs.proto.methods import CreateMany, NewFile

    registry = OSDRegistry(store, lambda: 1000.0, dead_after=30.0)
    registry.heartbeat("osd-1", "127.0.0.1:32640", 10 << 30, 100 << 30, {})
    xcaps = XCapIssuer(KeyRing.generate(), lambda: 1000.0, 60, may_hold=ns.may_hold)
    h = MRCHandlers(
        ns, registry, xcaps, lambda: None, "mrc-uuid", random.Random(1),
        waiters=LockWaiters(), client_lease=LEASE / SEC,
    )

    async def main() -> None:
        a, _ = ns.client_open(ALICE, LEASE)
        d = mkdir(ns, mode=0o777)
        assert ns.dir_lease_grant(ALICE, V, d, a).granted
        first, _ = ns.reserve_inos(ALICE, V, a, 3)
        now = store.clock()
        files = [
            NewFile(d, b"x", first, 0o644, FLAGS, 0o022, now),
            NewFile(d, b"x", first + 1, 0o644, FLAGS, 0o022, now),  # the name is taken
            NewFile(d, b"y", first + 2, 0o600, FLAGS, 0o022, now),
        ]
        commits = store.commits
        reply = await h.create_many(ALICE, CreateMany(V, a, files))
        assert [m.error for m in reply.files] == [0, errno.EEXIST, 0]
        assert store.commits == commits + 1  # one transaction for the batch
        assert [e.name for e in ns.readdir(ALICE, V, d, 0, 10)] == [b"x", b"y"]
        assert ns.lookup(ALICE, V, d, b"y").ino == first + 2
        again = await h.create_many(ALICE, CreateMany(V, a, files))
        assert [m.error for m in again.files] == [0, errno.EEXIST, 0]
        assert [e.name for e in ns.readdir(ALICE, V, d, 0, 10)] == [b"x", b"y"]

    trio_run(main)
