"""Deletes the objects of removed files from the OSDs, from a persisted queue.

The namespace enqueues a file in ``pending_deletions`` in the same transaction that
removes its last link, so nothing is forgotten across crashes. This task takes entries
off the queue once every OSD holding the file has confirmed the delete; an unreachable
OSD leaves the entry for the next round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from xfs.common.rpc import Pool
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.xcaps import XCapIssuer
from xfs.proto.errors import XfsError
from xfs.proto.methods import OSD, FileOp, FileOps
from xfs.proto.records import Rights, XLocSet

log = logging.getLogger(__name__)

# Unlinks come in storms (rm -r, a job's cleanup): a round starts once they have paused
# for SETTLE seconds (at most MAX_SETTLE after the first), so deleting objects does not
# compete with the unlinks for the MRC and the OSDs; space comes back that much later.
SETTLE = 0.5
MAX_SETTLE = 5.0
BATCH = 256  # files per round: one osd.delete_many per OSD, one transaction at the end
# Users go first: a batch starts once no user request came for QUIET seconds, or after
# MAX_DEFER (so deletion still progresses under a steady load, a batch every MAX_DEFER).
QUIET = 0.25
MAX_DEFER = 5.0


def by_osd(xlocs: list[XLocSet]) -> dict[str, list[int]]:
    """For each OSD, the positions in ``xlocs`` of the files it holds objects of."""
    held: dict[str, list[int]] = {}
    for i, xloc in enumerate(xlocs):
        for uuid in sorted({u for r in xloc.replicas for u in r.osds}):
            held.setdefault(uuid, []).append(i)
    return held


class Deleter:
    def __init__(
        self,
        ns: Namespace,
        registry: OSDRegistry,
        xcaps: XCapIssuer,
        pool: Pool,
        interval: float = 10.0,
        timeout: float = 10.0,
        last_request: Callable[[], float] = lambda: -float("inf"),
    ) -> None:
        self._ns = ns
        self._registry = registry
        self._xcaps = xcaps
        self._pool = pool
        self._interval = interval
        self._timeout = timeout
        self._wake = trio.Event()
        self._scope = trio.CancelScope()
        self._last_request = last_request  # trio time of the last user request

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
        while entries := self._ns.pending_deletions(BATCH):
            await self._users_first()
            finished = await self._delete(entries)
            self._ns.deletions_done(finished)
            done += len(finished)
            if len(finished) < len(entries):
                break  # an OSD is away: the rest waits for the next round
        return done

    async def _users_first(self) -> None:
        """Wait until no user request came for QUIET seconds (MAX_DEFER at most)."""
        end = trio.current_time() + MAX_DEFER
        while (now := trio.current_time()) < end:
            quiet_for = now - self._last_request()
            if quiet_for >= QUIET:
                return
            await trio.sleep(min(QUIET - quiet_for, end - now))

    async def _delete(self, entries: list[tuple[int, str, int, XLocSet]]) -> list[int]:
        """Ask every OSD to delete its part of ``entries`` (one request each, all OSDs at
        once); the ids of the entries every OSD confirmed."""
        ops = [FileOp(self._xcaps.own(v, ino, Rights.DELETE, 0, x), x) for _, v, ino, x in entries]
        held = by_osd([op.xloc for op in ops])
        addresses = self._registry.addresses(list(held))
        failed = {i for uuid, positions in held.items() if uuid not in addresses for i in positions}

        async def delete(uuid: str, positions: list[int]) -> None:
            try:
                with trio.fail_after(self._timeout):
                    reply = await self._pool.call(
                        addresses[uuid],
                        OSD.delete_many,
                        FileOps([ops[i] for i in positions]),
                        expect=f"osd:{uuid}",
                    )
                failed.update(positions[k] for k in reply.failed if 0 <= k < len(positions))
            except (XfsError, trio.TooSlowError) as e:
                log.info(
                    "deleting %d files on OSD %s failed (will retry): %s", len(positions), uuid, e
                )
                failed.update(positions)

        async with trio.open_nursery() as n:  # the OSDs at once
            for uuid, positions in held.items():
                if uuid in addresses:
                    n.start_soon(delete, uuid, positions)
        return [entries[i][0] for i in range(len(entries)) if i not in failed]
