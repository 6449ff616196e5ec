"""Usage and quotas in the MRC store (xfs.mrc.quotas): usage follows every change of an
inode (fsck compares it with the inodes after each test), files limits refuse new inodes,
bytes limits refuse a growing truncate and a chown, and the voucher rule. (Vouchers over a
real grid: tests/rpc/test_quota_vouchers.py.)"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.mrc_world import ALICE, BOB, ROOT, V, fsck_checked_store, raises
from xfs.mrc import fsck, quotas
from xfs.mrc.namespace import Namespace
from xfs.mrc.quotas import VOUCHER, Limit, Use
from xfs.mrc.sql import MetaStore
from xfs.mrc.store import FORMAT_VERSION, Store, add_functions
from xfs.proto.records import ROOT_INO, Replica, StripingPolicy, UpdatePolicy, XLocSet

ONE = XLocSet(1, [Replica(["osd-1"], StripingPolicy())])
THREE = XLocSet(
    1, [Replica([f"osd-{i}"], StripingPolicy()) for i in range(3)], UpdatePolicy.RW, factor=3
)
FLAGS = os.O_CREAT | os.O_RDWR


@pytest.fixture
def store(store_spec: str | Path) -> Iterator[MetaStore]:
    yield from fsck_checked_store(store_spec)


@pytest.fixture
def ns(store: Store) -> Namespace:
    n = Namespace(store)
    n.create_volume(ROOT, V, owner="root@physics", group="admins@physics", mode=0o777)
    return n


def used(ns: Namespace, principal: str) -> Use:
    with ns._store.read() as cur:
        vid = cur.execute("SELECT id FROM volumes WHERE name = ?", (V,)).fetchone()[0]
        return quotas.usage(cur, vid, principal)


def make(ns: Namespace, who: object, name: bytes, xloc: XLocSet = THREE) -> int:
    attr, _, _ = ns.create(who, V, ROOT_INO, name, 0o644, FLAGS, 0o022, xloc)  # type: ignore[arg-type]
    return attr.ino


def test_the_voucher_rule() -> None:
    assert quotas.voucher(100, 3, []) == -1
    assert quotas.voucher(100, 3, [None]) == -1
    assert quotas.voucher(100, 3, [None, 3000]) == 1100
    assert quotas.voucher(100, 3, [3000, 600]) == 300
    assert quotas.voucher(0, 1, [1 << 40]) == VOUCHER  # a step, not all that is left
    assert quotas.voucher(0, 1, [1 << 40], want=VOUCHER * 3) == VOUCHER * 3
    assert quotas.voucher(0, 2, [10], want=100) == 5
    assert quotas.room(None, 5) is None
    assert quotas.room(10, 4, 3) == 3
    assert quotas.room(10, 40) == 0


def test_usage_follows_every_change_of_an_inode(ns: Namespace) -> None:
    assert used(ns, "alice@physics") == Use()
    ino = make(ns, ALICE, b"data")
    ns.mkdir(ALICE, V, ROOT_INO, b"dir", 0o755, 0)
    ns.symlink(ALICE, V, ROOT_INO, b"link", b"data")
    assert used(ns, "alice@physics") == Use(3, 0)
    ns.update_size(ALICE, V, ino, 1000)  # three replicas: three times the size
    assert used(ns, "alice@physics") == Use(3, 3000)
    ns.setattr(ALICE, V, ino, size=10)
    assert used(ns, "alice@physics") == Use(3, 30)
    # a replica lost (or one more while a drain copies it): the policy's factor counts
    lost = XLocSet(2, THREE.replicas[:2], UpdatePolicy.RW, factor=3)
    ns.update_xloc(used_vid(ns), ino, lambda x: lost)
    assert used(ns, "alice@physics") == Use(3, 30)
    fewer = XLocSet(3, THREE.replicas[:2], UpdatePolicy.RW, factor=2)
    ns.update_xloc(used_vid(ns), ino, lambda x: fewer)  # the policy now keeps two
    assert used(ns, "alice@physics") == Use(3, 20)
    ns.setattr(ROOT, V, ino, owner="bob@physics")
    assert used(ns, "alice@physics") == Use(2, 0)
    assert used(ns, "bob@physics") == Use(1, 20)
    assert used(ns, quotas.VOLUME) == Use(4, 20)  # with the root directory
    ns.link(BOB, V, ino, ROOT_INO, b"again")
    assert used(ns, "bob@physics") == Use(1, 20)  # a second name is no second inode
    ns.unlink(BOB, V, ROOT_INO, b"data")
    ns.unlink(BOB, V, ROOT_INO, b"again")
    assert used(ns, "bob@physics") == Use(0, 0)


def used_vid(ns: Namespace) -> str:
    return ns.get_volume(V).id


def test_a_files_quota_refuses_new_inodes(ns: Namespace) -> None:
    ns.set_quota(V, "alice@physics", Limit(files=2))
    make(ns, ALICE, b"one")
    ns.mkdir(ALICE, V, ROOT_INO, b"two", 0o755, 0)
    e = raises(errno.EDQUOT, make, ns, ALICE, b"three")
    assert "alice@physics's quota of 2 files is used up" in e.message
    raises(errno.EDQUOT, ns.symlink, ALICE, V, ROOT_INO, b"l", b"one")
    make(ns, BOB, b"bobs")  # another owner is not held by alice's quota
    # a volume quota holds everyone (the root directory counts)
    ns.set_quota(V, quotas.VOLUME, Limit(files=5))
    make(ns, BOB, b"fifth")
    e = raises(errno.EDQUOT, make, ns, BOB, b"sixth")
    assert "the volume's quota of 5 files" in e.message
    # gone files make room; removing the quota lifts it
    ns.unlink(BOB, V, ROOT_INO, b"fifth")
    make(ns, BOB, b"sixth")
    ns.set_quota(V, quotas.VOLUME, Limit())
    ns.set_quota(V, "alice@physics", Limit())
    make(ns, ALICE, b"three")
    assert ns.quotas_of(V) == []


def test_a_files_quota_means_no_directory_leases(ns: Namespace) -> None:
    client = ns.client_open(ALICE, 30 * 10**9)[0]
    d = ns.mkdir(ALICE, V, ROOT_INO, b"mine", 0o755, 0).ino
    assert ns.dir_lease_grant(ALICE, V, d, client).granted
    assert ns.dir_leases_in(ns.get_volume(V).id, "alice@physics") == [d]
    assert ns.dir_leases_in(ns.get_volume(V).id, "") == [d]
    assert ns.dir_leases_in(ns.get_volume(V).id, "bob@physics") == []
    ns.dir_lease_return(ALICE, ns.get_volume(V).id, d, client)
    ns.set_quota(V, "alice@physics", Limit(bytes=1 << 30))  # bytes only: leases as before
    assert ns.dir_lease_grant(ALICE, V, d, client).granted
    ns.dir_lease_return(ALICE, ns.get_volume(V).id, d, client)
    ns.set_quota(V, "alice@physics", Limit(files=100))
    assert not ns.dir_lease_grant(ALICE, V, d, client).granted
    ns.set_quota(V, "alice@physics", Limit())
    ns.set_quota(V, quotas.VOLUME, Limit(files=100))
    assert not ns.dir_lease_grant(ALICE, V, d, client).granted


def test_a_bytes_quota_refuses_a_growing_truncate_and_a_chown(ns: Namespace) -> None:
    ino = make(ns, ALICE, b"f")
    ns.set_quota(V, "alice@physics", Limit(bytes=3000))
    ns.setattr(ALICE, V, ino, size=1000)  # 3 replicas: 3000 bytes, all of the quota
    e = raises(errno.EDQUOT, ns.setattr, ALICE, V, ino, size=1001)
    assert "quota of 3000 bytes" in e.message
    ns.setattr(ALICE, V, ino, size=10)  # shrinking is always allowed
    other = make(ns, BOB, b"bobs")
    ns.update_size(BOB, V, other, 1000)
    raises(errno.EDQUOT, ns.setattr, ROOT, V, other, owner="alice@physics")
    ns.update_size(ALICE, V, ino, 5000)  # a writer's size past the quota still lands:
    assert used(ns, "alice@physics").bytes == 15000  # its bytes are on the OSDs already


def test_quotas_go_with_their_volume(ns: Namespace) -> None:
    ns.set_quota(V, "alice@physics", Limit(files=5, bytes=1 << 20))
    make(ns, ALICE, b"f")
    ns.delete_volume(ROOT, V)
    with ns._store.read() as cur:
        assert cur.execute("SELECT count(*) FROM quotas").fetchone()[0] == 0
        assert cur.execute("SELECT count(*) FROM usage").fetchone()[0] == 0


def test_negative_limits_are_refused(ns: Namespace) -> None:
    raises(errno.EINVAL, ns.set_quota, V, "alice@physics", Limit(bytes=-1))


def test_format_5_is_upgraded_with_its_usage_counted(tmp_path: Path) -> None:
    path = tmp_path / "mrc.db"
    with Store.open(path) as store:
        ns = Namespace(store)
        ns.create_volume(ROOT, V, owner="root@physics", group="admins@physics", mode=0o777)
        ino = make(ns, ALICE, b"f")
        ns.update_size(ALICE, V, ino, 100)
        make(ns, ALICE, b"g", ONE)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "BEGIN; DROP TABLE usage; DROP TABLE quotas; "
        "DROP TABLE xcap_keys; DROP TABLE draining; "
        "UPDATE meta SET value = 5 WHERE key = 'format_version'; COMMIT;"
    )
    conn.close()
    with Store.open(path) as store:
        assert fsck.check(store) == []
        ns = Namespace(store)
        assert used(ns, "alice@physics") == Use(2, 300)
        assert used(ns, "root@physics") == Use(1, 0)
        with store.read() as cur:
            version = cur.execute("SELECT value FROM meta WHERE key = 'format_version'")
            assert version.fetchone()[0] == FORMAT_VERSION == 7


def test_fsck_finds_wrong_usage_and_repair_counts_it_again(tmp_path: Path) -> None:
    from xfs.mrc import repair

    path = tmp_path / "mrc.db"
    with Store.open(path) as store:
        ns = Namespace(store)
        ns.create_volume(ROOT, V, owner="root@physics", group="admins@physics", mode=0o777)
        make(ns, ALICE, b"f")
    conn = sqlite3.connect(path, isolation_level=None)
    add_functions(conn)
    conn.execute("UPDATE usage SET files = 7 WHERE principal = 'alice@physics'")
    (problem,) = repair.check(conn)
    assert "usage of 'alice@physics'" in problem and "7 files" in problem
    assert any("usage" in line for line in repair.repair(conn))
    assert repair.check(conn) == []
    conn.close()
