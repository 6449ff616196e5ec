"""What MRCs over one store share (format 7): the XCap key ring and the draining OSDs
live in the store, an older store's files move in once, and two MRCs over one
PostgreSQL store see one ring (xfs.mrc.shared, docs/design/metadata-ha.md)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from tests.conftest import pg_schema_dsn
from xfs.common import pgcluster
from xfs.common.xcap import KeyRing
from xfs.mrc import fsck, shared
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.sql import open_store
from xfs.mrc.store import FORMAT_VERSION, Store


def test_a_format_6_store_takes_in_the_key_ring_and_draining_file(tmp_path: Path) -> None:
    path, data = tmp_path / "mrc.db", tmp_path / "data"
    Store.open(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "DROP TABLE xcap_keys; DROP TABLE draining; "
        "UPDATE meta SET value = 6 WHERE key = 'format_version';"
    )
    conn.close()
    old = KeyRing.load_or_create(data / "xcap-keys", now=1000.0)
    staged = old.stage(now=2000.0)
    (data / "draining.json").write_text(json.dumps(["osd-a", "osd-b"]) + "\n")
    with contextlib.closing(Store.open(path)) as store:
        with store.read() as cur:
            assert cur.execute(
                "SELECT value FROM meta WHERE key = 'format_version'"
            ).fetchone()[0] == FORMAT_VERSION == 7
        done = shared.adopt_files(store, data)
        assert len(done) == 2
        ring = KeyRing.load_or_create_in(shared.StoreKeys(store))
        assert ring.public_keys() == old.public_keys()
        assert ring.current == old.current and ring.staged == (staged,)
        assert ring.since() == old.since()
        registry = OSDRegistry(store, lambda: 1000.0, dead_after=30.0)
        registry.load()
        assert registry.draining == {"osd-a", "osd-b"}
        assert shared.adopt_files(store, data) == []  # once only
        assert fsck.check(store) == []
    assert not (data / "xcap-keys").exists() and (data / "xcap-keys.adopted").is_dir()
    assert (data / "draining.json.adopted").is_file()


def test_two_mrcs_over_one_postgresql_store_share_keys_and_draining(
    pg_cluster: pgcluster.Cluster,
) -> None:
    dsn = pg_schema_dsn(pg_cluster)
    with contextlib.closing(open_store(dsn)) as one, contextlib.closing(open_store(dsn)) as two:
        ring = KeyRing.load_or_create_in(shared.StoreKeys(one), now=1000.0)
        promoted = ring.stage(now=1500.0)
        ring.promote(promoted, now=1500.0)
        old = next(k for k in ring.key_ids if k != promoted)
        ring.retire(old)
        theirs = KeyRing.load_or_create_in(shared.StoreKeys(two))
        assert theirs.public_keys() == ring.public_keys()
        assert theirs.current == promoted
        first = OSDRegistry(one, lambda: 1000.0, dead_after=30.0)
        first.load()
        first.drain("osd-c")
        second = OSDRegistry(two, lambda: 1000.0, dead_after=30.0)
        second.load()
        assert second.draining == {"osd-c"}
        assert second.undrain("osd-c")
        first.load()
        assert first.draining == set()
        assert fsck.check(two) == []


def test_only_one_mrc_leads_a_postgresql_store(pg_cluster: pgcluster.Cluster) -> None:
    dsn = pg_schema_dsn(pg_cluster)
    with contextlib.closing(open_store(dsn)) as one, contextlib.closing(open_store(dsn)) as two:
        assert one.try_lead()
        assert not two.try_lead()
        one.close()  # its session ends: the lead is free
        assert two.try_lead()
