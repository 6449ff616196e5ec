"""The MRC as replication's configuration manager: failures, fills and drains.

docs/design/replication.md is the protocol. Clients and primaries report an OSD that did
not answer (``replica_failed``); the MRC drops it from the file's XLocSet only once its
lease has run out (or it is declared dead), so that a live primary is never replaced and
a backup is never dropped while it may still act on the old version. Primaries report
replicas they filled (``replica_filled``); the MRC marks them complete. Every change is
one ``Namespace.update_xloc`` transaction with a pure step of ``replicas``.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from xfs.common import audit
from xfs.common.audit import NO_AUDIT, Audit
from xfs.common.rpc import Dispatcher
from xfs.mrc import replicas, roles
from xfs.mrc.namespace import Namespace
from xfs.mrc.osd_registry import OSDRegistry
from xfs.mrc.xcaps import Basis, XCapIssuer
from xfs.osd.objects import parse_file_id
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    Empty,
    OSDName,
    ReplicaFailed,
    ReplicaFilled,
    XLocReply,
)
from xfs.proto.records import Identity, Kind, Rights, XCap, XLocSet

log = logging.getLogger(__name__)


class ReplicationHandlers:
    def __init__(
        self,
        ns: Namespace,
        registry: OSDRegistry,
        xcaps: XCapIssuer,
        *,
        lease: float,
        replace_after: float,
        on_change: Callable[[], None] = lambda: None,
        audit: Audit = NO_AUDIT,
    ) -> None:
        self._ns = ns
        self._audit = audit
        self._registry = registry
        self._xcaps = xcaps
        self._lease = lease
        self._replace_after = replace_after
        self._on_change = on_change  # wakes the healer

    def register(self, d: Dispatcher) -> None:
        d.register(MRC.replica_failed, self.replica_failed)
        d.register(MRC.replica_filled, self.replica_filled)
        d.register(MRC.osd_drain, self.osd_drain)
        d.register(MRC.osd_undrain, self.osd_undrain)

    def lease_over(self, osd: str) -> bool:
        """Whether ``osd`` can no longer be acting on any XLocSet it holds."""
        return self._registry.silent_for(osd) > self._lease

    def _file(self, peer: Identity, xcap: XCap) -> tuple[str, int]:
        """The file an XCap names, once the XCap is ours and the caller may use it."""
        relayed = peer.kind is Kind.OSD
        volume_id, ino = parse_file_id(xcap.file_id)
        self._xcaps.check(
            xcap,
            holder=xcap.holder if relayed else peer.fingerprint,
            volume_id=volume_id,
            ino=ino,
            rights=Rights(0),
        )
        if peer.kind not in (Kind.OSD, Kind.USER):
            raise XfsError(errno.EACCES, f"{peer.principal} may not report replicas")
        return volume_id, ino

    def _reply(
        self, peer: Identity, volume_id: str, ino: int, xloc: XLocSet, epoch: int, rights: int
    ) -> XLocReply:
        """The new XLocSet, with an XCap for it of the rights of the one ``peer`` showed:
        a client's renewed only if it still may hold them (the file's mode and ACL, and
        search on the way to it, as they are now); an OSD's as shown."""
        name, owner = self._ns.volume_by_id(volume_id)
        who = peer
        basis = Basis.SHOWN
        if peer.kind is Kind.USER:
            who, basis = roles.effective(peer, owner), Basis.CHECKED
        xcap = self._xcaps.grant(
            peer,
            who,
            volume_id,
            ino,
            Rights(rights),
            epoch,
            xloc,
            basis,
            volume=name,
        )
        osds = sorted(replicas.osds_of(xloc))
        return XLocReply(xloc, xcap, self._registry.addresses(osds))

    async def replica_failed(self, peer: Identity, req: ReplicaFailed) -> XLocReply:
        volume_id, ino = self._file(peer, req.xcap)

        def drop(current: XLocSet) -> XLocSet:
            if replicas.replica_on(current, req.osd) is None or not self.lease_over(req.osd):
                return current
            try:
                return replicas.drop(current, req.osd)
            except XfsError as e:  # the last complete replica: wait for it to come back
                log.warning("OSD %s of %s:%d is silent, but %s", req.osd, volume_id, ino, e)
                return current

        xloc, epoch = self._ns.update_xloc(volume_id, ino, drop)
        if replicas.replica_on(xloc, req.osd) is None and req.version < xloc.version:
            log.info(
                "OSD %s dropped from %s:%d on %s's report (version %d)",
                req.osd,
                volume_id,
                ino,
                peer.principal,
                xloc.version,
            )
            self._on_change()
        return self._reply(peer, volume_id, ino, xloc, epoch, req.xcap.rights)

    async def replica_filled(self, peer: Identity, req: ReplicaFilled) -> XLocReply:
        volume_id, ino = self._file(peer, req.xcap)
        reporter = peer.principal.removeprefix("osd:")

        def mark(current: XLocSet) -> XLocSet:
            replica = replicas.replica_on(current, req.osd)
            if current.version != req.version or replica is None:
                return current  # changed meanwhile: the next primary fills again
            column = replica.osds.index(req.osd)
            if current.group(column)[0] != reporter:
                raise XfsError(
                    errno.EACCES, f"{peer.principal} is not the primary of {req.osd}'s column"
                )
            return replicas.filled(current, req.osd)

        xloc, epoch = self._ns.update_xloc(volume_id, ino, mark)
        self._on_change()
        return self._reply(peer, volume_id, ino, xloc, epoch, 0)

    async def osd_drain(self, peer: Identity, req: OSDName) -> Empty:
        if not self._registry.known(req.uuid):
            raise XfsError(errno.ENOENT, f"no OSD {req.uuid} is registered")
        self._registry.drain(req.uuid)
        log.info("draining OSD %s on %s's request", req.uuid, peer.principal)
        self._audit.record(audit.ADMIN, peer.principal, "osd_drain", osd=req.uuid)
        self._on_change()
        return Empty()

    async def osd_undrain(self, peer: Identity, req: OSDName) -> Empty:
        if not self._registry.known(req.uuid):
            raise XfsError(errno.ENOENT, f"no OSD {req.uuid} is registered")
        was = self._registry.undrain(req.uuid)
        log.info("OSD %s takes new replicas again, on %s's request", req.uuid, peer.principal)
        self._audit.record(
            audit.ADMIN, peer.principal, "osd_undrain", osd=req.uuid, was_draining=was
        )
        self._on_change()
        return Empty()
