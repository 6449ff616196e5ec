"""Group commit: one fsync of the MRC's journal covers every commit made before it, and
a caller of ``sync`` returns only once its commits are covered."""

from __future__ import annotations

from pathlib import Path

import trio

from xfs.mrc.store import Store
from xfs.mrc.syncer import Syncer


class CountingStore:
    """A store whose commits the test makes, counting fsyncs."""

    def __init__(self) -> None:
        self.commits = 0
        self.fsyncs: list[int] = []  # commits covered by each fsync

    def sync(self) -> None:
        self.fsyncs.append(self.commits)

    def checkpoint_elsewhere(self) -> None:
        pass

    def checkpoint(self) -> None:
        pass


def test_one_fsync_for_many_waiting_callers() -> None:
    store = CountingStore()

    async def main() -> None:
        with trio.fail_after(10):
            syncer = Syncer(store, interval=3600)  # type: ignore[arg-type]
            async with trio.open_nursery() as n:
                await n.start(syncer.run)
                store.commits = 5
                async with trio.open_nursery() as callers:
                    for _ in range(20):
                        callers.start_soon(syncer.sync)
                assert store.fsyncs == [5] and syncer.synced == 5
                await syncer.sync()  # nothing new: no fsync
                assert store.fsyncs == [5]
                store.commits = 6
                await syncer.sync()
                assert store.fsyncs == [5, 6]
                syncer.stop()

    trio.run(main)


def test_commits_are_synced_within_the_interval_unasked() -> None:
    store = CountingStore()

    async def main() -> None:
        with trio.fail_after(10):
            syncer = Syncer(store, interval=0.05)  # type: ignore[arg-type]
            async with trio.open_nursery() as n:
                await n.start(syncer.run)
                store.commits = 3
                while store.fsyncs != [3]:
                    await trio.sleep(0.01)
                await trio.sleep(0.3)
                assert store.fsyncs == [3]  # nothing committed since: no fsync
                syncer.stop()

    trio.run(main)


def test_a_real_store_syncs(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "mrc.db")
    try:

        async def main() -> None:
            with trio.fail_after(10):
                syncer = Syncer(store, interval=3600)
                async with trio.open_nursery() as n:
                    await n.start(syncer.run)
                    with store.transaction() as cur:
                        cur.execute("UPDATE meta SET value = value WHERE key = 'format_version'")
                    await syncer.sync()
                    assert syncer.synced == store.commits
                    syncer.stop()

        trio.run(main)
    finally:
        store.close()


def test_commits_never_checkpoint_the_syncer_does(tmp_path: Path) -> None:
    """A COMMIT that crosses SQLite's 1,000 WAL pages would checkpoint (two fsyncs) on
    the event loop; with the Syncer in charge the WAL grows past that and its checkpoint
    copies it into the database file, every commit kept."""
    store = Store.open(tmp_path / "mrc.db")
    try:
        store.checkpoint_elsewhere()
        page = store._conn.execute("PRAGMA page_size").fetchone()[0]
        with store.transaction() as cur:
            cur.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        for k in range(1500):
            with store.transaction() as cur:
                cur.execute("INSERT INTO t VALUES (?, ?)", (k, b"x" * 3000))
        wal = Path(f"{store.path}-wal")
        assert wal.stat().st_size > 1000 * page  # no commit checkpointed
        store.checkpoint()
        busy, frames, copied = store._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied  # everything was copied already
    finally:
        store.close()
    again = Store.open(tmp_path / "mrc.db")
    try:
        with again.read() as cur:
            assert cur.execute("SELECT count(*) FROM t").fetchone()[0] == 1500
    finally:
        again.close()
