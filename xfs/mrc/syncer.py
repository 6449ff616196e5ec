"""Group commit: one fsync of the MRC's WAL for many transactions.

Every transaction is committed (written to the WAL) before its reply, so a crash of the
MRC process loses nothing acknowledged. A crash of the machine can lose what no fsync
covered yet; the ``Syncer`` fsyncs the WAL every ``interval`` seconds when anything was
committed, and at once when a client asks (``sync``: the MRC side of ``fsync(2)`` on a
file or a directory), one fsync then covering every transaction committed before it
started. WAL checkpoints (which fsync too) run in a worker thread every second, never
inside a commit on the event loop. See docs/design/metadata.md.
"""

from __future__ import annotations

import logging

import trio

from xfs.mrc.sql import MetaStore

log = logging.getLogger(__name__)


CHECKPOINT_EVERY = 10  # sync intervals between WAL checkpoints (1 s by default)


class Syncer:
    def __init__(self, store: MetaStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._synced = 0  # commits covered by the last completed fsync
        self._wake = trio.Event()
        self._done = trio.Event()  # set when the fsync in progress (or the next) ends
        self._scope = trio.CancelScope()

    @property
    def synced(self) -> int:
        return self._synced

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            self._store.checkpoint_elsewhere()
            async with trio.open_nursery() as n:
                n.start_soon(self._checkpoints)
                task_status.started()
                await self._syncs()

    async def _checkpoints(self) -> None:
        """Copy the WAL into the database every CHECKPOINT_EVERY syncs' worth of time,
        in a worker thread: the event loop never waits for it."""
        done = self._store.commits
        while True:
            await trio.sleep(self._interval * CHECKPOINT_EVERY)
            if self._store.commits != done:
                done = self._store.commits
                await trio.to_thread.run_sync(self._store.checkpoint)

    async def _syncs(self) -> None:
        while True:
            with trio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = trio.Event()
            target = self._store.commits
            if target > self._synced:
                await trio.to_thread.run_sync(self._store.sync)
                self._synced = target
            done, self._done = self._done, trio.Event()
            done.set()

    def stop(self) -> None:
        self._scope.cancel()

    async def sync(self) -> None:
        """Return once every transaction committed before this call is durable."""
        target = self._store.commits
        while self._synced < target:
            done = self._done
            self._wake.set()
            await done.wait()
