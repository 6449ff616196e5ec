"""RPC adapters of the OSD: decode, verify the XCap, call the object store, encode.

Every request carries an XCap and the XLocSet it was issued for. Before any object is
touched the XCap is verified (signature, validity, holder = this connection's peer,
file, rights, XLocSet version and hash) and this OSD must appear in the XLocSet; the
column it holds there decides which objects it may serve. Writes and truncates are
fenced by the XCap's truncate epoch in the object store (see ``objects``).

Refusals of authority are ``EACCES`` (the dispatcher audits them); requests for objects
or ranges outside what the XCap's column allows are ``EINVAL`` and audited here.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any

import trio

from xfs.common import audit as audits
from xfs.common.audit import NO_AUDIT, Audit
from xfs.common.rpc import Dispatcher
from xfs.common.xcap import XCapVerifier
from xfs.osd.objects import MAX_OBJNO, ObjectStore, parse_file_id
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    OSD,
    Empty,
    FileOp,
    ObjData,
    ObjRead,
    ObjWrite,
    OSDStatus,
    SizeReply,
    Synced,
)
from xfs.proto.records import Identity, Replica, Rights, XCap, XLocSet


class OSDHandlers:
    def __init__(
        self,
        store: ObjectStore,
        uuid: str,
        verifier: XCapVerifier,
        clock: Callable[[], float],
        io_threads: int = 8,
        *,
        audit: Audit = NO_AUDIT,
    ) -> None:
        self._store = store
        self._audit = audit
        self._uuid = uuid
        self._verifier = verifier
        self._clock = clock
        self._io = trio.CapacityLimiter(io_threads)

    def register(self, dispatcher: Dispatcher) -> None:
        dispatcher.register(OSD.read, self.read)
        dispatcher.register(OSD.write, self.write)
        dispatcher.register(OSD.truncate, self.truncate)
        dispatcher.register(OSD.fsync, self.fsync)
        dispatcher.register(OSD.size, self.size)
        dispatcher.register(OSD.delete, self.delete)
        dispatcher.register(OSD.status, self.status)

    # ------------------------------------------------------------------ checks
    def _authorize(
        self, peer: Identity, xcap: XCap, xloc: XLocSet, rights: Rights
    ) -> tuple[Replica, int]:
        self._verifier.verify(
            xcap,
            now=self._clock(),
            holder=peer.fingerprint,
            file_id=xcap.file_id,
            rights=int(rights),
            xloc=xloc,
        )
        try:  # only a broken or stolen MRC key could sign such a file id
            parse_file_id(xcap.file_id)
        except XfsError:
            raise XfsError(
                errno.EACCES, f"xcap: names no file an OSD holds ({xcap.file_id!r:.100})"
            ) from None
        for replica in xloc.replicas:
            if self._uuid in replica.osds:
                return replica, replica.osds.index(self._uuid)
        raise XfsError(errno.EACCES, f"OSD {self._uuid} is not in the XLocSet of {xcap.file_id}")

    def _check_object(
        self,
        peer: Identity,
        action: str,
        xcap: XCap,
        replica: Replica,
        column: int,
        objno: int,
        offset: int,
        length: int,
    ) -> None:
        size = replica.striping.stripe_size
        reason = ""
        if objno < 0 or objno % len(replica.osds) != column:
            reason = f"object {objno} is not on stripe column {column}"
        elif offset < 0 or length < 0 or offset + length > size:
            reason = f"range {offset}+{length} outside a {size}-byte object"
        elif objno > MAX_OBJNO:
            reason = f"bad object number {objno}"
        if reason:
            self._audit.record(
                audits.DENY, peer.principal, action, "EINVAL", why=reason, file=xcap.file_id
            )
            raise XfsError(errno.EINVAL, reason)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._io)

    # ------------------------------------------------------------------ methods
    async def read(self, peer: Identity, req: ObjRead) -> ObjData:
        replica, column = self._authorize(peer, req.xcap, req.xloc, Rights.READ)
        self._check_object(
            peer, OSD.read.wire_name, req.xcap, replica, column, req.objno, req.offset, req.length
        )
        data = await self._run(
            self._store.read, req.xcap.file_id, req.objno, req.offset, req.length
        )
        return ObjData(data)

    async def write(self, peer: Identity, req: ObjWrite) -> Empty:
        replica, column = self._authorize(peer, req.xcap, req.xloc, Rights.WRITE)
        self._check_object(
            peer, OSD.write.wire_name, req.xcap, replica, column, req.objno, req.offset,
            len(req.data),
        )
        write = functools.partial(self._store.write, epoch=req.xcap.truncate_epoch)
        await self._run(write, req.xcap.file_id, req.objno, req.offset, req.data, req.sync)
        return Empty()

    async def truncate(self, peer: Identity, req: FileOp) -> Empty:
        replica, column = self._authorize(peer, req.xcap, req.xloc, Rights.TRUNCATE)
        if req.size < 0:
            self._audit.record(
                audits.DENY, peer.principal, OSD.truncate.wire_name, "EINVAL",
                why="negative size", file=req.xcap.file_id,
            )
            raise XfsError(errno.EINVAL, "negative size")
        await self._run(
            functools.partial(self._store.truncate, epoch=req.xcap.truncate_epoch),
            req.xcap.file_id,
            req.size,
            replica.striping.stripe_size,
            len(replica.osds),
            column,
        )
        return Empty()

    async def fsync(self, peer: Identity, req: FileOp) -> Synced:
        self._authorize(peer, req.xcap, req.xloc, Rights.WRITE)
        await self._run(self._store.fsync, req.xcap.file_id)
        # what a writer learns of its allocation (st_blocks) comes with the sync
        return Synced(await self._run(self._store.held_bytes, req.xcap.file_id))

    async def size(self, peer: Identity, req: FileOp) -> SizeReply:
        # a writer may learn what it wrote (the allocation behind st_blocks) too
        wanted = Rights.READ if req.xcap.rights & Rights.READ else Rights.WRITE
        replica, _ = self._authorize(peer, req.xcap, req.xloc, wanted)
        held = await self._run(
            self._store.held_size, req.xcap.file_id, replica.striping.stripe_size
        )
        allocated = await self._run(self._store.held_bytes, req.xcap.file_id)
        return SizeReply(held, allocated)

    async def delete(self, peer: Identity, req: FileOp) -> Empty:
        self._authorize(peer, req.xcap, req.xloc, Rights.DELETE)
        await self._run(self._store.delete, req.xcap.file_id)
        return Empty()

    async def status(self, peer: Identity, req: Empty) -> OSDStatus:
        free, total = await self._run(self._store.usage)
        objects = await self._run(self._store.count_objects)
        return OSDStatus(self._uuid, free, total, objects)
