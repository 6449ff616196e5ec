"""The OSD's heartbeat: registers with the MRC, reports free space, fetches XCap keys,
renews this OSD's lease (see xfs.osd.replication.Lease) and learns the other OSDs'
addresses."""

from __future__ import annotations

import logging

import trio

from xfs.common.rpc import Pool
from xfs.osd.objects import ObjectStore
from xfs.osd.replication import Lease
from xfs.proto.errors import XfsError
from xfs.proto.methods import MRC
from xfs.proto.methods import Heartbeat as HeartbeatRequest
from xfs.proto.records import Kind

log = logging.getLogger(__name__)


class Heartbeat:
    """Long-lived: ``run()`` reports every ``interval`` seconds until ``stop()``."""

    def __init__(
        self,
        pool: Pool,
        mrc: str,
        uuid: str,
        address: str,
        store: ObjectStore,
        keys: dict[str, bytes],
        interval: float,
        labels: dict[str, str],
        lease: Lease | None = None,
        peers: dict[str, str] | None = None,
    ) -> None:
        self._pool = pool
        self._mrc = mrc
        self._uuid = uuid
        self._address = address
        self._store = store
        self._keys = keys
        self._interval = interval
        self._labels = labels
        self._lease = lease or Lease()
        self._peers = peers if peers is not None else {}
        self._scope = trio.CancelScope()
        self.registered = trio.Event()

    async def beat(self) -> None:
        free, total = await trio.to_thread.run_sync(self._store.usage)
        request = HeartbeatRequest(self._uuid, self._address, free, total, self._labels)
        sent_at = self._lease.now()
        with trio.fail_after(max(self._interval * 2, 5.0)):
            reply = await self._pool.call(self._mrc, MRC.osd_heartbeat, request, expect=Kind.MRC)
        self._keys.clear()
        self._keys.update(reply.xcap_keys)
        if reply.lease > 0:
            self._lease.granted(sent_at, reply.lease)
            # renew well before it runs out: a few beats per lease
            self._interval = min(self._interval, reply.lease / 4)
        self._peers.clear()
        self._peers.update(reply.osds)
        if not self.registered.is_set():
            log.info("registered with the MRC at %s as %s", self._mrc, self._uuid)
            self.registered.set()

    async def run(self) -> None:
        with self._scope:
            while True:
                try:
                    await self.beat()
                except (XfsError, trio.TooSlowError) as e:
                    log.warning("heartbeat to the MRC at %s failed: %s", self._mrc, e)
                await trio.sleep(self._interval)

    def stop(self) -> None:
        self._scope.cancel()
