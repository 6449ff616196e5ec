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
