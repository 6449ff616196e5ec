"""The registry of OSDs, fed by their heartbeats and kept in the MRC store.

Besides what ``xfs status`` shows, it keeps, on the monotonic clock, when each OSD was
last heard from: an OSD's lease (docs/design/replication.md) runs out ``osd_lease``
seconds after that, and since an OSD that this MRC has not heard from yet may hold a
lease from before a restart, every lease counts from this MRC's start at the earliest.
Draining OSDs are listed in ``drain_file`` (JSON, beside the store), so that a drain
survives a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import trio

from xfs.mrc import shared
from xfs.mrc.sql import MetaStore
from xfs.proto.records import OSDInfo

# seconds after its start an MRC waits, before placing a new file, for the OSDs it knew
# to report again (see ``OSDRegistry.settled``)
SETTLE = 5.0


class OSDRegistry:
    def __init__(
        self,
        store: MetaStore,
        clock: Callable[[], float],
        dead_after: float,
        lease: float = float("inf"),
    ) -> None:
        self._lease = lease
        self._store = store
        self._clock = clock
        self._dead_after = dead_after
        self._osds: dict[str, OSDInfo] = {}
        self._monotonic = time.monotonic
        self._started = self._monotonic()
        self._heard: dict[str, float] = {}  # uuid -> monotonic time of its last heartbeat
        self.draining: set[str] = set()
        self._expected: set[str] = set()  # the OSDs known at load (see ``settled``)
        self._settled = trio.Event()

    def load(self) -> None:
        """Read the known OSDs; none counts as alive until it reports again."""
        with self._store.read() as cur:
            for uuid, address, free, total, labels, last_seen in cur.execute(
                "SELECT uuid, address, free, total, labels, last_seen FROM osds"
            ):
                self._osds[uuid] = OSDInfo(
                    uuid, address, free, total, last_seen, False, json.loads(labels)
                )
        self.draining = shared.draining(self._store)
        self._expected = set(self._osds) - self.draining
        self._check_settled()

    def _check_settled(self) -> None:
        if not self._settled.is_set() and self._expected <= self._heard.keys():
            self._settled.set()

    async def settled(self) -> None:
        """Return once every OSD this registry knew at ``load`` has reported again, or
        ``SETTLE`` seconds after the start. Until then the MRC knows no OSD alive (after
        a restart, or a standby's takeover: docs/design/metadata-ha.md), and a file
        placed then would get ENOSPC; the OSDs report within a heartbeat."""
        left = SETTLE - (self._monotonic() - self._started)
        if not self._settled.is_set() and left > 0:
            with trio.move_on_after(left):
                await self._settled.wait()

    def drain(self, uuid: str) -> None:
        """Move every replica off ``uuid`` (the healer does it) and place nothing new there."""
        shared.set_draining(self._store, uuid, True)
        self.draining.add(uuid)

    def undrain(self, uuid: str) -> bool:
        """Place new replicas on ``uuid`` again (what moved off stays where it went);
        whether it was draining."""
        if uuid not in self.draining:
            return False
        shared.set_draining(self._store, uuid, False)
        self.draining.discard(uuid)
        return True

    def known(self, uuid: str) -> bool:
        return uuid in self._osds

    def silent_for(self, uuid: str) -> float:
        """Seconds since ``uuid``'s last heartbeat (at most since this MRC started)."""
        return self._monotonic() - max(self._heard.get(uuid, self._started), self._started)

    def heartbeat(
        self, uuid: str, address: str, free: int, total: int, labels: dict[str, str]
    ) -> None:
        now = self._clock()
        self._heard[uuid] = self._monotonic()
        self._check_settled()
        known = self._osds.get(uuid)
        self._osds[uuid] = OSDInfo(uuid, address, free, total, now, True, labels)
        if (
            known is None
            or known.address != address
            or known.labels != labels
            or now - known.last_seen > 60
        ):
            with self._store.transaction() as cur:
                cur.execute(
                    "INSERT INTO osds (uuid, address, free, total, labels, last_seen)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO UPDATE SET"
                    " address = excluded.address, free = excluded.free,"
                    " total = excluded.total, labels = excluded.labels,"
                    " last_seen = excluded.last_seen",
                    (uuid, address, free, total, json.dumps(labels, sort_keys=True), now),
                )

    def all(self) -> list[OSDInfo]:
        now = self._clock()
        return [
            OSDInfo(
                o.uuid,
                o.address,
                o.free,
                o.total,
                o.last_seen,
                o.alive and now - o.last_seen < self._dead_after,
                o.labels,
            )
            for o in self._osds.values()
        ]

    def placeable(self) -> list[OSDInfo]:
        """The OSDs new replicas may go to: alive, heard from within a lease, not draining."""
        return [
            o
            for o in self.all()
            if o.alive and o.uuid not in self.draining and self.silent_for(o.uuid) < self._lease
        ]

    def all_addresses(self) -> dict[str, str]:
        return {u: o.address for u, o in self._osds.items()}

    def addresses(self, uuids: list[str]) -> dict[str, str]:
        return {u: self._osds[u].address for u in uuids if u in self._osds}
