"""Deletes the objects of removed files from the OSDs, from a persisted queue.

The namespace enqueues a file in ``pending_deletions`` in the same transaction that
removes its last link, so nothing is forgotten across crashes. This task takes entries
off the queue once every OSD holding the file has confirmed the delete; an unreachable
OSD leaves the entry for the next round.
"""

from __future__ import annotations

import logging

import trio

from xfs.common.rpc import Pool
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.xcaps import XCapIssuer
from xfs.proto.errors import XfsError
from xfs.proto.methods import OSD, FileOp
from xfs.proto.records import Rights, XLocSet

log = logging.getLogger(__name__)

# Unlinks come in storms (rm -r, a job's cleanup): a round starts once they have paused
# for SETTLE seconds (at most MAX_SETTLE after the first), so deleting objects does not
# compete with the unlinks for the MRC and the OSDs; space comes back that much later.
SETTLE = 0.5
MAX_SETTLE = 5.0


class Deleter:
    def __init__(
        self,
        ns: Namespace,
        registry: OSDRegistry,
        xcaps: XCapIssuer,
        pool: Pool,
        own_fingerprint: bytes,
        interval: float = 10.0,
        timeout: float = 10.0,
    ) -> None:
        self._ns = ns
        self._registry = registry
        self._xcaps = xcaps
        self._pool = pool
        self._fingerprint = own_fingerprint
        self._interval = interval
        self._timeout = timeout
        self._wake = trio.Event()
        self._scope = trio.CancelScope()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        with self._scope:
            while True:
                await self.round()
                with trio.move_on_after(self._interval):
                    await self._wake.wait()
                await self._settle()

    async def _settle(self) -> None:
        """Wait until no wake came for SETTLE seconds (MAX_SETTLE at most)."""
        end = trio.current_time() + MAX_SETTLE
        while True:
            self._wake = trio.Event()
            with trio.move_on_at(min(end, trio.current_time() + SETTLE)) as quiet:
                await self._wake.wait()
            if quiet.cancelled_caught:
                self._wake = trio.Event()
                return

    def stop(self) -> None:
        self._scope.cancel()

    async def round(self) -> int:
        """Delete what is queued; returns how many files were finished."""
        done = 0
        for id, volume_id, ino, xloc in self._ns.pending_deletions(100):
            if await self._delete(volume_id, ino, xloc):
                self._ns.deletion_done(id)
                done += 1
        return done

    async def _delete(self, volume_id: str, ino: int, xloc: XLocSet) -> bool:
        xcap = self._xcaps.issue(volume_id, ino, Rights.DELETE, 0, xloc, self._fingerprint)
        osds = sorted({u for r in xloc.replicas for u in r.osds})
        addresses = self._registry.addresses(osds)
        failed: list[str] = [u for u in osds if u not in addresses]

        async def delete(uuid: str) -> None:
            try:
                with trio.fail_after(self._timeout):
                    await self._pool.call(
                        addresses[uuid], OSD.delete, FileOp(xcap, xloc), expect=f"osd:{uuid}"
                    )
            except (XfsError, trio.TooSlowError) as e:
                log.info(
                    "deleting %s:%d on OSD %s failed (will retry): %s", volume_id, ino, uuid, e
                )
                failed.append(uuid)

        async with trio.open_nursery() as n:  # the OSDs at once
            for uuid in osds:
                if uuid in addresses:
                    n.start_soon(delete, uuid)
        return not failed
