"""Background scrubbing: every ``scrub_interval`` seconds a pass over every file with a
layout, at most ``scrub_rate`` files a second, asks each OSD that holds a replica to read
and verify its objects of the file (``osd.scrub``) with an XCap the MRC holds. An OSD
repairs a corrupt object of a replicated file from another complete replica and audits
it; what no replica can mend is counted and logged. Progress is ``xfs status``'s scrub
line and the metrics ``xfs_scrub_*``.
"""

from __future__ import annotations

import logging

import trio

from xfs.common.rpc import Pool
from xfs.mrc import replicas
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.xcaps import XCapIssuer
from xfs.proto.errors import XfsError
from xfs.proto.methods import OSD, FileOp, ScrubStatus
from xfs.proto.records import Rights

log = logging.getLogger(__name__)

CALL_TIMEOUT = 120.0  # one OSD's scrub of one file


class Scrubber:
    def __init__(
        self,
        ns: Namespace,
        registry: OSDRegistry,
        xcaps: XCapIssuer,
        pool: Pool,
        *,
        interval: float,
        rate: float,
    ) -> None:
        self._ns = ns
        self._registry = registry
        self._xcaps = xcaps
        self._pool = pool
        self._interval = interval
        self._pause = 1.0 / rate if rate > 0 else 0.0
        self.status = ScrubStatus(0, 0, 0, 0, 0)

    async def run(self) -> None:
        """A pass every ``interval`` seconds (the first after one interval); 0: never."""
        if self._interval <= 0:
            return
        while True:
            await trio.sleep(self._interval)
            try:
                await self.scrub_pass()
            except XfsError as e:
                log.warning("scrub pass failed: %s", e)

    async def scrub_pass(self) -> ScrubStatus:
        s = self.status
        self.status = ScrubStatus(s.passes, 0, 0, s.repaired, s.unrepaired, running=True)
        after: tuple[str, int] = ("", 0)
        while batch := self._ns.replicated_files(after, everything=True):
            for volume_id, ino, _ in batch:
                await self._file(volume_id, ino)
                if self._pause:
                    await trio.sleep(self._pause)
            after = (batch[-1][0], batch[-1][1])
        s = self.status
        self.status = ScrubStatus(s.passes + 1, s.files, s.objects, s.repaired, s.unrepaired)
        return self.status

    async def _file(self, volume_id: str, ino: int) -> None:
        try:
            xloc, epoch = self._ns.layout_of(volume_id, ino)
        except XfsError:
            return  # deleted meanwhile
        xcap = self._xcaps.own(volume_id, ino, Rights.READ, epoch, xloc)
        osds = sorted(replicas.osds_of(xloc))
        addresses = self._registry.addresses(osds)
        checked = repaired = unrepaired = 0
        for osd in osds:
            address = addresses.get(osd)
            if address is None:
                continue
            try:
                with trio.fail_after(CALL_TIMEOUT):
                    found = await self._pool.call(
                        address, OSD.scrub, FileOp(xcap, xloc), expect=f"osd:{osd}"
                    )
            except (XfsError, trio.TooSlowError) as e:
                log.info("scrub of %s:%d on %s: %s", volume_id, ino, osd, e)
                continue
            checked += found.checked
            repaired += len(found.repaired)
            unrepaired += len(found.unrepaired)
            if found.unrepaired:
                log.error(
                    "scrub: objects %s of %s:%d on %s are corrupt and no replica mends them",
                    found.unrepaired,
                    volume_id,
                    ino,
                    osd,
                )
        s = self.status
        self.status = ScrubStatus(
            s.passes,
            s.files + 1,
            s.objects + checked,
            s.repaired + repaired,
            s.unrepaired + unrepaired,
            running=True,
        )
