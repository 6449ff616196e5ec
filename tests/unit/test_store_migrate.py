"""Moving an MRC's store between engines (``xfs store-migrate``): SQLite to a real
PostgreSQL and back, every row the same, fsck clean on each, a used destination refused."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import pg_schema_dsn
from tests.unit.mrc_world import ALICE, ROOT, V
from xfs.common import pgcluster
from xfs.mrc import fsck, migrate, quotas
from xfs.mrc.namespace import Namespace
from xfs.mrc.sql import open_store
from xfs.proto.records import ROOT_INO, Replica, StripingPolicy, XLocSet

XLOC = XLocSet(version=1, replicas=[Replica(osds=["osd-1"], striping=StripingPolicy())])


def populate(ns: Namespace) -> None:
    """A little of everything the tables hold."""
    ns.create_volume(ROOT, V, owner="alice@physics", group="users@physics", mode=0o755)
    d = ns.mkdir(ALICE, V, ROOT_INO, b"dir", 0o750, 0)
    for i in range(30):
        name = f"f{i}".encode()
        ns.create(ALICE, V, d.ino, name, 0o640, os.O_WRONLY | os.O_CREAT, 0, XLOC)
    f = ns.lookup(ALICE, V, d.ino, b"f0")
    ns.link(ALICE, V, f.ino, ROOT_INO, b"hard")
    ns.symlink(ALICE, V, ROOT_INO, b"sym", b"dir/f1")
    ns.setxattr(ALICE, V, f.ino, b"user.note", b"\x00\xffbinary")
    ns.unlink(ALICE, V, d.ino, b"f2")  # its objects: a pending deletion
    ns.set_quota(V, "alice@physics", quotas.Limit(files=1000, bytes=None))


def run_migrate(source: str | Path, destination: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xfs.cli.main", "store-migrate", str(source), str(destination)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_sqlite_to_postgresql_and_back(pg_cluster: pgcluster.Cluster, tmp_path: Path) -> None:
    first = tmp_path / "first.db"
    with contextlib.closing(open_store(first)) as store:
        populate(Namespace(store))
    pg = pg_schema_dsn(pg_cluster)
    there = run_migrate(first, pg)
    assert there.returncode == 0, there.stdout + there.stderr
    copied = dict(line.split(": ") for line in there.stdout.splitlines() if " rows" in line)
    assert list(copied) == migrate.tables()
    assert copied["inodes"] == "32 rows"  # root, dir, 29 files left, the symlink
    assert copied["pending_deletions"] == "1 rows"
    back = run_migrate(pg, tmp_path / "back.db")
    assert back.returncode == 0, back.stdout + back.stderr
    with (
        contextlib.closing(open_store(first)) as a,
        contextlib.closing(open_store(tmp_path / "back.db")) as b,
        contextlib.closing(open_store(pg)) as c,
    ):
        assert migrate.differences(a, b) == []
        assert migrate.differences(a, c) == []
        assert fsck.check(c) == []
        # the copy works as a store: new inodes and pending deletions get fresh numbers
        with c.read() as cur:
            (top,), (deletion,) = cur.execute(
                "SELECT max(ino) FROM inodes UNION ALL SELECT max(id) FROM pending_deletions"
            ).fetchall()
        ns = Namespace(c)
        made = ns.create(ALICE, V, ROOT_INO, b"new", 0o600, os.O_WRONLY | os.O_CREAT, 0, XLOC)[0]
        assert made.ino > top
        assert ns.unlink(ALICE, V, ROOT_INO, b"new") > deletion
        assert fsck.check(c) == []


def test_a_used_destination_is_refused(pg_cluster: pgcluster.Cluster, tmp_path: Path) -> None:
    first = tmp_path / "first.db"
    with contextlib.closing(open_store(first)) as store:
        populate(Namespace(store))
    pg = pg_schema_dsn(pg_cluster)
    assert run_migrate(first, pg).returncode == 0
    again = run_migrate(first, pg)
    assert again.returncode != 0
    assert "is not a new store: volumes has rows" in again.stderr
    existing = run_migrate(pg, first)
    assert existing.returncode != 0 and "exists: give a new file" in existing.stderr


def test_a_source_in_use_is_refused(tmp_path: Path) -> None:
    first = tmp_path / "first.db"
    with contextlib.closing(open_store(first)) as store:
        populate(Namespace(store))
        busy = run_migrate(first, tmp_path / "copy.db")  # this process holds it open
    assert busy.returncode != 0 and "is in use by process" in busy.stderr, busy.stderr
    assert not (tmp_path / "copy.db").exists()
