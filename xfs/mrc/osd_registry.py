"""The registry of OSDs, fed by their heartbeats and kept in the MRC store."""

from __future__ import annotations

import json
from collections.abc import Callable

from xfs.mrc.store import Store
from xfs.proto.records import OSDInfo


class OSDRegistry:
    def __init__(self, store: Store, clock: Callable[[], float], dead_after: float) -> None:
        self._store = store
        self._clock = clock
        self._dead_after = dead_after
        self._osds: dict[str, OSDInfo] = {}

    def load(self) -> None:
        """Read the known OSDs; none counts as alive until it reports again."""
        with self._store.read() as cur:
            for uuid, address, free, total, labels, last_seen in cur.execute(
                "SELECT uuid, address, free, total, labels, last_seen FROM osds"
            ):
                self._osds[uuid] = OSDInfo(
                    uuid, address, free, total, last_seen, False, json.loads(labels)
                )

    def heartbeat(
        self, uuid: str, address: str, free: int, total: int, labels: dict[str, str]
    ) -> None:
        now = self._clock()
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
                    "INSERT OR REPLACE INTO osds (uuid, address, free, total, labels, last_seen)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
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

    def addresses(self, uuids: list[str]) -> dict[str, str]:
        return {u: self._osds[u].address for u in uuids if u in self._osds}
