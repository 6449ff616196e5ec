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
                self._wake = trio.Event()

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
        ok = True
        for uuid in osds:
            address = addresses.get(uuid)
            if address is None:
                ok = False
                continue
            try:
                with trio.fail_after(self._timeout):
                    await self._pool.call(
                        address, OSD.delete, FileOp(xcap, xloc), expect=f"osd:{uuid}"
                    )
            except (XfsError, trio.TooSlowError) as e:
                log.info(
                    "deleting %s:%d on OSD %s failed (will retry): %s", volume_id, ino, uuid, e
                )
                ok = False
        return ok
