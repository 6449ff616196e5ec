"""RPC adapters of the OSD: decode, verify the XCap, call the object store, encode.

Every request carries an XCap and the XLocSet it was issued for. Before any object is
touched the XCap is verified (signature, validity, holder = this connection's peer,
file, rights, XLocSet version and hash) and this OSD must appear in the XLocSet; the
column it holds there decides which objects it may serve. Writes and truncates are
fenced by the XCap's truncate epoch in the object store (see ``objects``).

Refusals of authority are ``EACCES`` (the dispatcher audits them); requests for objects
or ranges outside what the XCap's column allows are ``EINVAL`` and audited here; bytes
past the XCap's quota voucher (``max_size``, docs/design/quotas.md) are ``EDQUOT``.

Replicated files (``rw``, ``ronly``) go through ``replication``: an XLocSet older than
the one installed here is refused with ``ESTALE`` (the client renews and retries); for
``rw`` files only the primary of a column serves clients, and it forwards writes,
truncates and fsyncs to the other OSDs of the column (the ``fwd_*`` methods, which only
that primary may call). A corrupt object is read from another replica and repaired.
One method is served by every replica alike: ``digest``, which reports what this copy
holds (for ``xfs checkpoint verify``) and repairs nothing.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from xfs.common import audit as audits
from xfs.common import extents, metrics
from xfs.common.audit import NO_AUDIT, Audit
from xfs.common.rpc import Dispatcher
from xfs.common.xcap import XCapVerifier
from xfs.osd.objects import MAX_OBJNO, CorruptObject, ObjectStore, parse_file_id
from xfs.osd.replication import Replication, stale_first
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    OSD,
    Digest,
    Empty,
    Failed,
    FileOp,
    FileOps,
    LocalOpen,
    ObjData,
    ObjDigest,
    ObjPut,
    ObjRead,
    ObjSum,
    ObjSums,
    ObjWrite,
    OSDStatus,
    Scrubbed,
    SizeReply,
    Synced,
)
from xfs.proto.records import Identity, Kind, Replica, Rights, UpdatePolicy, XCap, XLocSet

log = logging.getLogger(__name__)

MAX_DELETE_MANY = 1024  # files one delete_many may name

T = TypeVar("T")


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
        replication: Replication | None = None,
    ) -> None:
        self._store = store
        self.replication = replication
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
        dispatcher.register(OSD.delete_many, self.delete_many)
        dispatcher.register(OSD.status, self.status)
        dispatcher.register(OSD.fwd_write, self.fwd_write)
        dispatcher.register(OSD.fwd_truncate, self.fwd_truncate)
        dispatcher.register(OSD.fwd_fsync, self.fwd_fsync)
        dispatcher.register(OSD.sums, self.sums)
        dispatcher.register(OSD.put, self.put)
        dispatcher.register(OSD.fetch, self.fetch)
        dispatcher.register(OSD.sync, self.sync)
        dispatcher.register(OSD.digest, self.digest)
        dispatcher.register(OSD.scrub, self.scrub)

    # ------------------------------------------------------------------ checks
    def _authorize(
        self, peer: Identity, xcap: XCap, xloc: XLocSet, rights: Rights
    ) -> tuple[Replica, int]:
        # another OSD of the file (forwards, reconciliation; methods only OSDs may call)
        # acts on an XCap it was handed: the signature and XLocSet bind it, not the holder
        relayed = peer.kind is Kind.OSD
        self._verifier.verify(
            xcap,
            now=self._clock(),
            holder=xcap.holder if relayed else peer.fingerprint,
            file_id=xcap.file_id,
            rights=0 if relayed else int(rights),
            xloc=xloc,
        )
        return self._column(xcap, xloc)

    def _column(self, xcap: XCap, xloc: XLocSet) -> tuple[Replica, int]:
        """This OSD's replica of the file and its stripe column in it."""
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

    def _check_write(
        self, peer: Identity, action: str, req: ObjWrite, replica: Replica, column: int
    ) -> int:
        """``_check_object`` for a write, its ranges too; how far past its offset it
        reaches."""
        why = extents.problem(req.offset, len(req.data), req.extents)
        if why:
            self._audit.record(
                audits.DENY, peer.principal, action, "EINVAL", why=why, file=req.xcap.file_id
            )
            raise XfsError(errno.EINVAL, why)
        span = extents.end_of(req.offset, len(req.data), req.extents) - req.offset
        self._check_object(peer, action, req.xcap, replica, column, req.objno, req.offset, span)
        return span

    def _within_voucher(self, peer: Identity, action: str, xcap: XCap, end: int) -> None:
        """EDQUOT if the write or truncate reaches past the XCap's quota voucher."""
        if 0 <= xcap.max_size < end:
            self._audit.record(
                audits.DENY,
                peer.principal,
                action,
                "EDQUOT",
                why=f"up to byte {end}, voucher {xcap.max_size}",
                file=xcap.file_id,
            )
            raise XfsError(
                errno.EDQUOT,
                f"{xcap.file_id}: quota voucher ends at byte {xcap.max_size}, "
                f"the write reaches {end}",
            )

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._io)

    run_io = _run  # the replication layer's store calls share the I/O threads

    def _replication(self, xloc: XLocSet) -> Replication | None:
        """The replication layer, for a replicated file (None for ``none`` files)."""
        if xloc.update_policy is UpdatePolicy.NONE:
            return None
        if self.replication is None:
            raise XfsError(errno.EOPNOTSUPP, "this OSD does not replicate")
        return self.replication

    # ------------------------------------------------------------------ methods
    async def read(self, peer: Identity, req: ObjRead) -> ObjData:
        reply = await self._read(peer, req)
        metrics.data("read", len(reply.data))
        return reply

    async def _read(self, peer: Identity, req: ObjRead) -> ObjData:
        replica, column = self._authorize(peer, req.xcap, req.xloc, Rights.READ)
        self._check_object(
            peer, OSD.read.wire_name, req.xcap, replica, column, req.objno, req.offset, req.length
        )
        file_id = req.xcap.file_id
        repl = self._replication(req.xloc)
        if repl is None:
            data = await self._run(self._store.read, file_id, req.objno, req.offset, req.length)
            return ObjData(data)
        read = functools.partial(self._store.read_held, file_id, req.objno, req.offset, req.length)
        part = slice(req.offset, req.offset + req.length)
        try:
            data = await self._read_checked(repl, req.xcap, req.xloc, column, read)
        except CorruptObject as e:
            log.warning("%s; reading it from another replica", e)
            whole = await repl.repair(file_id, req.xloc, req.xcap, column, req.objno)
            data = None if whole is None else whole[part]
        else:
            if data is None and not replica.complete:  # partial replica: fill on demand
                whole = await repl.repair(file_id, req.xloc, req.xcap, column, req.objno)
                data = None if whole is None else whole[part]
        return ObjData(data or b"")

    async def digest(self, peer: Identity, req: ObjDigest) -> Digest:
        """The SHA-256 of one object as this replica holds it (any replica, primary or
        not, complete or filling), for ``xfs checkpoint verify``: nothing is repaired or
        filled, so a corrupt or missing copy is reported, not hidden."""
        replica, column = self._authorize(peer, req.xcap, req.xloc, Rights.READ)
        self._check_object(
            peer, OSD.digest.wire_name, req.xcap, replica, column, req.objno, 0, req.length
        )
        try:
            data = await self._run(self._store.load, req.xcap.file_id, req.objno)
        except CorruptObject as e:
            return Digest(b"", 0, f"corrupt: {e}")
        if data is None and not replica.complete:
            return Digest(b"", 0, "not filled yet")
        held = b"" if data is None else data
        if len(held) > req.length:
            return Digest(b"", len(held), f"holds {len(held)} bytes, more than {req.length}")
        padded = held + bytes(req.length - len(held))
        return Digest(await self._run(_sha256, padded), len(held))

    async def open_local(self, req: LocalOpen) -> int:
        """A descriptor of the directory of a file's objects here, for a mount on this
        host that reads them itself (``xfs.osd.local``). Checked as ``read``, but for the
        holder: a peer of the local socket runs as root or as this OSD's user and could
        read the store anyway. Only a complete replica, at the current XLocSet (and for
        rw replication at its primary, reconciled as for a read)."""
        xcap, xloc = req.xcap, req.xloc
        self._verifier.verify(
            xcap,
            now=self._clock(),
            holder=xcap.holder,
            file_id=xcap.file_id,
            rights=int(Rights.READ),
            xloc=xloc,
        )
        replica, column = self._column(xcap, xloc)
        if not replica.complete:
            raise XfsError(errno.EAGAIN, "a partial replica: read through the OSD")
        repl = self._replication(xloc)
        if repl is not None:
            await self._read_checked(repl, xcap, xloc, column)
        return int(await self._run(self._store.open_dir, xcap.file_id))

    @staticmethod
    async def _read_checked(
        repl: Replication,
        xcap: XCap,
        xloc: XLocSet,
        column: int,
        then: Callable[[], T] | None = None,
    ) -> T | None:
        """The checks before a read of a replicated file here, then ``then`` (the store
        call, in the same worker-thread call when the checks need one): for rw at the
        primary (``begin``: its lease, the version, reconciliation), else the version."""
        if xloc.update_policy is UpdatePolicy.RW:
            return await repl.begin(xcap.file_id, xloc, xcap, column, then=then)
        _, result = await repl.check_version(xcap.file_id, xloc, then=then)
        return result

    async def write(self, peer: Identity, req: ObjWrite) -> Empty:
        metrics.data("write", len(req.data))
        replica, column = self._authorize(peer, req.xcap, req.xloc, Rights.WRITE)
        span = self._check_write(peer, OSD.write.wire_name, req, replica, column)
        end = req.objno * replica.striping.stripe_size + req.offset + span
        self._within_voucher(peer, OSD.write.wire_name, req.xcap, end)
        file_id, repl = req.xcap.file_id, self.replication
        if repl is None:
            await self._write_local(req)
            return Empty()
        self._writable(req.xloc, req.xcap)
        # checked inside the gate: a reconciliation that installs a newer version waits
        # for the writes that passed the older one (see Replication.reconcile)
        async with repl.gates.shared(file_id), repl.objects.hold((file_id, req.objno)):
            write = self._writer(req)
            if req.xloc.update_policy is UpdatePolicy.NONE:
                await repl.check_version(file_id, req.xloc, then=write)
                return Empty()
            # the checks first, then this copy and the others at once (fan-out): each
            # backup checks the XLocSet version itself and applies what it received
            await repl.begin(file_id, req.xloc, req.xcap, column)
            try:
                await _together(
                    functools.partial(
                        self._write_repairing, repl, req, column, self._runner(write)
                    ),
                    functools.partial(repl.forward, req.xloc, req.xcap, column, OSD.fwd_write, req),
                )
            except XfsError:
                # the others may have applied what this copy could not (a full disk):
                # bring them back to this copy, as after a failover
                repl.start_reconcile(file_id, req.xloc, req.xcap, column, again=True)
                raise
        return Empty()

    def _runner(self, fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
        return functools.partial(self._run, fn)

    def _writer(self, req: ObjWrite) -> Callable[[], None]:
        """The store call that applies ``req`` here."""
        return functools.partial(
            self._store.write,
            req.xcap.file_id,
            req.objno,
            req.offset,
            req.data,
            req.sync,
            epoch=req.xcap.truncate_epoch,
            extents=req.extents,
        )

    async def _write_local(self, req: ObjWrite) -> None:
        await self._run(self._writer(req))

    async def _write_repairing(
        self, repl: Replication, req: ObjWrite, column: int, attempt: Callable[[], Awaitable[Any]]
    ) -> None:
        """``attempt`` (which applies ``req``, after the version checks); a partial write
        reads the object first: if the copy here is corrupt, a good copy is fetched from
        another complete replica (stored here) and the write applied to it, as a read
        would repair it, instead of failing the write on every OSD."""
        try:
            await attempt()
        except CorruptObject as e:
            log.warning("%s; reading it from another replica before writing", e)
            await repl.repair(req.xcap.file_id, req.xloc, req.xcap, column, req.objno)
            await self._write_local(req)

    @staticmethod
    def _writable(xloc: XLocSet, xcap: XCap) -> None:
        if xloc.update_policy is UpdatePolicy.RONLY:
            raise XfsError(errno.EPERM, f"{xcap.file_id} is sealed (read-only replicated)")

    async def truncate(self, peer: Identity, req: FileOp) -> Empty:
        replica, column = self._authorize(peer, req.xcap, req.xloc, Rights.TRUNCATE)
        if req.size < 0:
            self._audit.record(
                audits.DENY,
                peer.principal,
                OSD.truncate.wire_name,
                "EINVAL",
                why="negative size",
                file=req.xcap.file_id,
            )
            raise XfsError(errno.EINVAL, "negative size")
        self._within_voucher(peer, OSD.truncate.wire_name, req.xcap, req.size)
        file_id, repl = req.xcap.file_id, self.replication
        if repl is None:
            await self._truncate_local(req, replica, column)
            return Empty()
        self._writable(req.xloc, req.xcap)
        async with repl.gates.exclusive(file_id):
            if req.xloc.update_policy is UpdatePolicy.NONE:
                await repl.check_version(file_id, req.xloc)
                await self._truncate_local(req, replica, column)
                return Empty()
            await repl.begin(file_id, req.xloc, req.xcap, column)
            await self._truncate_local(req, replica, column)
            await repl.forward(req.xloc, req.xcap, column, OSD.fwd_truncate, req)
        return Empty()

    async def _truncate_local(self, req: FileOp, replica: Replica, column: int) -> None:
        await self._run(
            functools.partial(self._store.truncate, epoch=req.xcap.truncate_epoch),
            req.xcap.file_id,
            req.size,
            replica.striping.stripe_size,
            len(replica.osds),
            column,
        )

    async def fsync(self, peer: Identity, req: FileOp) -> Synced:
        _, column = self._authorize(peer, req.xcap, req.xloc, Rights.WRITE)
        repl = self._replication(req.xloc)
        # what a writer learns of its allocation (st_blocks) comes with the sync
        sync = functools.partial(self._run, self._store.sync_and_measure, req.xcap.file_id)
        if repl is None or req.xloc.update_policy is not UpdatePolicy.RW:
            return Synced(await sync())
        await repl.begin(req.xcap.file_id, req.xloc, req.xcap, column)
        held, _ = await _together(  # this copy and the others at once
            sync, functools.partial(repl.forward, req.xloc, req.xcap, column, OSD.fwd_fsync, req)
        )
        return Synced(held)

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

    async def delete_many(self, peer: Identity, req: FileOps) -> Failed:
        """Several files' ``delete`` in one worker-thread call; each XCap is checked on
        its own, and a refused or failed one fails alone."""
        if len(req.ops) > MAX_DELETE_MANY:
            raise XfsError(errno.EINVAL, f"{len(req.ops)} files in one delete_many")
        failed: list[int] = []
        allowed: list[tuple[int, str]] = []
        for i, op in enumerate(req.ops):
            try:
                self._authorize(peer, op.xcap, op.xloc, Rights.DELETE)
            except XfsError as e:
                log.warning("delete of %s refused: %s", op.xcap.file_id, e)
                failed.append(i)
            else:
                allowed.append((i, op.xcap.file_id))

        def delete_all() -> list[int]:
            gone_wrong = []
            for i, file_id in allowed:
                try:
                    self._store.delete(file_id)
                except XfsError as e:
                    log.warning("delete of %s failed: %s", file_id, e)
                    gone_wrong.append(i)
            return gone_wrong

        return Failed(sorted(failed + await self._run(delete_all)))

    async def status(self, peer: Identity, req: Empty) -> OSDStatus:
        free, total = await self._run(self._store.usage)
        objects = await self._run(self._store.count_objects)
        return OSDStatus(self._uuid, free, total, objects)

    # ------------------------------------------------------------------ between replicas
    def _primary_peer(
        self, peer: Identity, xcap: XCap, xloc: XLocSet
    ) -> tuple[Replication, Replica, int]:
        """The checks of a request from another OSD: the file's primary, replicated."""
        replica, column = self._authorize(peer, xcap, xloc, Rights(0))
        repl = self._replication(xloc)
        if repl is None:
            raise XfsError(errno.EINVAL, f"{xcap.file_id} is not replicated")
        repl.require_peer(peer.principal, xcap.file_id, xloc, column)
        return repl, replica, column

    async def _from_primary(
        self, peer: Identity, xcap: XCap, xloc: XLocSet
    ) -> tuple[Replication, Replica, int]:
        repl, replica, column = self._primary_peer(peer, xcap, xloc)
        await repl.check_version(xcap.file_id, xloc)
        return repl, replica, column

    async def fwd_write(self, peer: Identity, req: ObjWrite) -> Empty:
        metrics.data("forward", len(req.data))
        # the version check runs with the write (one worker-thread call when it needs I/O)
        repl, replica, column = self._primary_peer(peer, req.xcap, req.xloc)
        self._check_write(peer, OSD.fwd_write.wire_name, req, replica, column)
        # a corrupt copy here is repaired from another replica first; the primary's may
        # or may not hold this write yet (it writes while it forwards), and the write
        # applied to either gives the same object
        check = functools.partial(repl.check_version, req.xcap.file_id, req.xloc, self._writer(req))
        await self._write_repairing(repl, req, column, check)
        return Empty()

    async def fwd_truncate(self, peer: Identity, req: FileOp) -> Empty:
        _, replica, column = await self._from_primary(peer, req.xcap, req.xloc)
        await self._truncate_local(req, replica, column)
        return Empty()

    async def fwd_fsync(self, peer: Identity, req: FileOp) -> Synced:
        await self._from_primary(peer, req.xcap, req.xloc)
        return Synced(await self._run(self._store.sync_and_measure, req.xcap.file_id))

    async def sums(self, peer: Identity, req: FileOp) -> ObjSums:
        await self._from_primary(peer, req.xcap, req.xloc)
        sums = await self._run(self._store.sums, req.xcap.file_id)
        return ObjSums([ObjSum(o, c, n) for o, c, n in sums])

    async def put(self, peer: Identity, req: ObjPut) -> Empty:
        _, replica, column = await self._from_primary(peer, req.xcap, req.xloc)
        length = 0 if req.data is None else len(req.data)
        self._check_object(peer, OSD.put.wire_name, req.xcap, replica, column, req.objno, 0, length)
        await self._run(
            functools.partial(self._store.put, epoch=req.xcap.truncate_epoch),
            req.xcap.file_id,
            req.objno,
            req.data,
        )
        return Empty()

    async def fetch(self, peer: Identity, req: ObjRead) -> ObjData:
        """Another OSD of the file reads a whole object (repair, partial fill)."""
        replica, column = self._authorize(peer, req.xcap, req.xloc, Rights(0))
        if peer.principal.removeprefix("osd:") not in req.xloc.group(column):
            raise XfsError(errno.EACCES, f"{peer.principal} holds no replica of this column")
        self._check_object(peer, OSD.fetch.wire_name, req.xcap, replica, column, req.objno, 0, 0)
        data = await self._run(self._store.load, req.xcap.file_id, req.objno)
        return ObjData(b"" if data is None else data, held=data is not None)

    async def scrub(self, peer: Identity, req: FileOp) -> Scrubbed:
        """The MRC's scrubber: read and verify every object of the file held here; a
        corrupt one of a replicated file is repaired from another complete replica (with
        the MRC's XCap), and audited either way."""
        _, column = self._authorize(peer, req.xcap, req.xloc, Rights.READ)
        file_id = req.xcap.file_id
        repl = None if req.xloc.update_policy is UpdatePolicy.NONE else self.replication
        held = await self._run(self._store.sums, file_id)
        repaired: list[int] = []
        unrepaired: list[int] = []
        for objno, _, _ in held:
            try:
                await self._run(self._store.load, file_id, objno)
                continue
            except CorruptObject as e:
                log.warning("scrub: %s", e)
            whole = None
            if repl is not None:
                try:
                    whole = await repl.repair(file_id, req.xloc, req.xcap, column, objno)
                except XfsError as e:
                    log.warning("scrub: repair of %s:%d failed: %s", file_id, objno, e)
            (repaired if whole is not None else unrepaired).append(objno)
            self._audit.record(
                audits.ADMIN,
                peer.principal,
                "scrub",
                "repaired" if whole is not None else "EIO",
                file=file_id,
                object=objno,
            )
        return Scrubbed(len(held), repaired, unrepaired)

    async def sync(self, peer: Identity, req: FileOp) -> Empty:
        """The MRC asks this primary to reconcile (and so fill) the file's group now."""
        _, column = self._authorize(peer, req.xcap, req.xloc, Rights(0))
        repl = self._replication(req.xloc)
        if repl is None:
            return Empty()
        await repl.check_version(req.xcap.file_id, req.xloc)
        group = req.xloc.group(column)
        if group and group[0] == self._uuid:
            repl.start_reconcile(req.xcap.file_id, req.xloc, req.xcap, column, again=True)
        return Empty()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def _together(
    first: Callable[[], Awaitable[Any]], second: Callable[[], Awaitable[Any]]
) -> tuple[Any, Any]:
    """Both calls at once; their results, or the failure of either (``stale_first``), as
    an ``XfsError`` of its own, not a group."""
    results: list[Any] = [None, None]
    errors: list[XfsError] = []

    async def run(i: int, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            results[i] = await call()
        except XfsError as e:
            errors.append(e)

    async with trio.open_nursery() as n:
        n.start_soon(run, 0, first)
        n.start_soon(run, 1, second)
    if errors:
        raise stale_first(errors)
    return results[0], results[1]
