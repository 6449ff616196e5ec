"""Self-healing: every replicated file back to its factor, off dead and draining OSDs.

Each round the healer looks at the replicated files and, per file, in one
``Namespace.update_xloc`` transaction takes the next step of :func:`plan`:

1. replicas on OSDs declared dead (silent past ``osd_replace_after``) are dropped,
   unless one is the last complete replica (then the file waits for that OSD);
2. while the file has fewer replicas than its factor, new ones are placed (incomplete)
   on alive, non-draining OSDs over failure domains (``placement.place``);
3. a replica on a draining OSD gets a replacement first and is dropped only once the
   file has ``factor`` complete replicas elsewhere, so a drain never lowers redundancy.

Then, for every file with replicas still to be filled in the background, it asks the
primary to fill them (``osd.sync``; partial replicas fill as they serve reads instead);
the primary reports each filled replica (``mrc.replica_filled``). The round also counts
what ``xfs status`` shows as progress (``RepairStatus``).

A full scan of the replicated files runs when something changed (an OSD died or
returned, a drain, a failover, a fill) or while work remains, else every
``RESCAN`` seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Collection

import trio

from xfs.common.rpc import Pool
from xfs.mrc import placement, replicas
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.xcaps import XCapIssuer
from xfs.proto.errors import XfsError
from xfs.proto.methods import OSD, FileOp, RepairStatus
from xfs.proto.records import OSDInfo, PlacementPolicy, Rights, UpdatePolicy, XLocSet

log = logging.getLogger(__name__)

RESCAN = 30.0  # seconds between full scans when nothing changed
SYNC_TIMEOUT = 10.0


def plan(
    xloc: XLocSet,
    *,
    dead: Collection[str],
    draining: Collection[str],
    place: Callable[[XLocSet, int], list[list[str]]],
) -> XLocSet:
    """The file's XLocSet after one healing step (pure; unchanged if nothing to do)."""
    for osd in sorted(replicas.osds_of(xloc) & set(dead)):
        # not the last complete replica: then the file waits for that OSD
        with contextlib.suppress(XfsError):
            xloc = replicas.drop(xloc, osd)
    on_drain = [r for r in xloc.replicas if set(r.osds) & set(draining)]
    if on_drain and xloc.update_policy is UpdatePolicy.NONE:
        # an unreplicated file moves as a replicated one (its factor kept): writes reach
        # the new copy while it is filled
        xloc = dataclasses.replace(xloc, version=xloc.version + 1, update_policy=UpdatePolicy.RW)
        on_drain = [r for r in xloc.replicas if set(r.osds) & set(draining)]
    keep = [r for r in xloc.replicas if r not in on_drain]
    if on_drain and sum(r.complete for r in keep) >= xloc.factor:
        for r in on_drain:
            xloc = replicas.drop(xloc, r.osds[0])
        return xloc
    wanted = xloc.factor - len(keep) if xloc.replicated else 0
    if wanted > 0:
        for osds in place(xloc, wanted):
            xloc = replicas.add(xloc, osds)
    return xloc


def _healthy(xloc: XLocSet, away: set[str]) -> bool:
    """Nothing for the healer to do for a file (as a scan read it): no replica on an OSD
    that is dead or draining, none missing, none filling. A later change of its XLocSet
    wakes the healer for another round."""
    return not xloc.filling and not xloc.below_factor and not (replicas.osds_of(xloc) & away)


class Healer:
    def __init__(
        self,
        ns: Namespace,
        registry: OSDRegistry,
        xcaps: XCapIssuer,
        pool: Pool,
        *,
        replace_after: float,
        interval: float,
        placement_of: Callable[[str], PlacementPolicy] = lambda volume_id: PlacementPolicy(),
        rng: random.Random | None = None,
    ) -> None:
        self._ns = ns
        self._registry = registry
        self._xcaps = xcaps
        self._pool = pool
        self._replace_after = replace_after
        self._interval = interval
        self._placement_of = placement_of
        self._rng = rng or random.Random()
        self._wake = trio.Event()
        self._dirty = True
        self._last_scan = -RESCAN
        self._dead: set[str] = set()
        self.status = RepairStatus(0, 0, 0, [], {})

    def wake(self) -> None:
        self._dirty = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except XfsError as e:
                log.warning("healing round failed: %s", e)
            with trio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = trio.Event()

    def _dead_now(self) -> set[str]:
        return {
            o.uuid
            for o in self._registry.all()
            if self._registry.silent_for(o.uuid) > self._replace_after
        }

    async def round(self) -> RepairStatus:
        dead = self._dead_now()
        alive = {o.uuid for o in self._registry.all() if o.alive}
        if dead != self._dead:
            for osd in dead - self._dead:
                log.warning(
                    "OSD %s is dead (silent over %g s): replacing its replicas",
                    osd,
                    self._replace_after,
                )
            self._dead = dead
            self._dirty = True
        if alive != getattr(self, "_alive", None):
            self._alive = alive
            self._dirty = True
        if not self._dirty and time.monotonic() - self._last_scan < RESCAN:
            return self.status
        self._dirty = False
        self._last_scan = time.monotonic()
        draining = set(self._registry.draining)
        candidates = self._registry.placeable()
        counts = {"files": 0, "below": 0, "filling": 0}
        left_on: dict[str, int] = {u: 0 for u in draining}
        after: tuple[str, int] = ("", 0)
        while True:
            batch = self._ns.replicated_files(after, everything=bool(draining))
            if not batch:
                break
            for volume_id, ino, scanned in batch:
                if _healthy(scanned, dead | draining):
                    xloc: XLocSet | None = scanned  # no transaction for a file with no work
                else:
                    xloc = await self._heal(volume_id, ino, dead, draining, candidates)
                if xloc is None:
                    continue
                counts["files"] += 1
                filling = len(xloc.filling)
                counts["below"] += xloc.below_factor
                counts["filling"] += filling
                for osd in replicas.osds_of(xloc) & draining:
                    left_on[osd] += 1
                if filling or xloc.below_factor:
                    self._dirty = True  # work remains: look again next round
            after = (batch[-1][0], batch[-1][1])
        self.status = RepairStatus(
            counts["files"], counts["below"], counts["filling"], sorted(dead), left_on
        )
        return self.status

    async def _heal(
        self,
        volume_id: str,
        ino: int,
        dead: set[str],
        draining: set[str],
        candidates: list[OSDInfo],
    ) -> XLocSet | None:
        policy = self._placement_of(volume_id)

        def place(xloc: XLocSet, wanted: int) -> list[list[str]]:
            used = replicas.osds_of(xloc)
            return placement.place(
                candidates,
                policy,
                wanted,
                xloc.replicas[0].striping.width,
                self._rng,
                exclude=used | dead | draining,
                existing=sorted(used),
            )

        try:
            xloc, epoch = self._ns.update_xloc(
                volume_id,
                ino,
                lambda current: plan(current, dead=dead, draining=draining, place=place),
            )
        except XfsError as e:  # deleted meanwhile
            log.debug("healing %s:%d: %s", volume_id, ino, e)
            return None
        if xloc.filling:
            await self._sync(volume_id, ino, xloc, epoch)
        return xloc

    async def _sync(self, volume_id: str, ino: int, xloc: XLocSet, epoch: int) -> None:
        """Ask each column's primary (first complete replica) to fill the others."""
        xcap = self._xcaps.own(volume_id, ino, Rights.READ | Rights.WRITE, epoch, xloc)
        primaries = set(xloc.replicas[0].osds)
        addresses = self._registry.addresses(sorted(primaries))
        for osd in sorted(primaries):
            address = addresses.get(osd)
            if address is None:
                continue
            try:
                with trio.fail_after(SYNC_TIMEOUT):
                    await self._pool.call(
                        address, OSD.sync, FileOp(xcap, xloc), expect=f"osd:{osd}"
                    )
            except (XfsError, trio.TooSlowError) as e:
                log.info("asking %s to fill %s:%d failed: %s", osd, volume_id, ino, e)
