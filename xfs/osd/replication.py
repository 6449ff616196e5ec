"""The OSD's part of replication: versions, the primary's lease, forwarding, reconciling.

docs/design/replication.md is the protocol; this module is its OSD side. In short: every
request names the XLocSet it was issued for; an older version than the one installed
here is refused (``ESTALE``), a newer one is installed (durably, unless it is a new
file's first version, which fences nothing) first. For ``rw`` files
the primary of a stripe column applies a write, forwards it to every other OSD of the
column's group, and answers only when all of them applied it; an OSD that does not answer
is reported to the MRC, which drops it once its lease has run out. The first time an OSD
acts as primary of a file at a version it reconciles the group (``sums`` + ``put``),
which also fills new replicas, and then reports them filled.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from xfs.common.health import Health
from xfs.common.rpc import Pool, unreachable
from xfs.osd.objects import FIRST_XLOC_VERSION, CorruptObject, ObjectStore
from xfs.proto.codec import Record
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    OSD,
    FileOp,
    Method,
    ObjPut,
    ObjRead,
    ObjSums,
    ReplicaFailed,
    ReplicaFilled,
)
from xfs.proto.records import Kind, UpdatePolicy, XCap, XLocSet

log = logging.getLogger(__name__)

T = TypeVar("T")
Req = TypeVar("Req", bound=Record)
Resp = TypeVar("Resp", bound=Record)

LEASE_SAFETY = 0.9  # of the granted lease this OSD uses: room for clock-rate drift
RETRY_PAUSE = 0.25  # seconds between attempts to reach a replica


def stale_first(errors: list[XfsError]) -> XfsError:
    """The failure to report of several: ESTALE first (this primary or its XLocSet is
    stale, the client must renew), else any."""
    return min(errors, key=lambda e: e.code != errno.ESTALE)


def _refuse_older(file_id: str, xloc: XLocSet, installed: int) -> None:
    if xloc.version < installed:
        raise XfsError(
            errno.ESTALE,
            f"XLocSet version {xloc.version} of {file_id} is stale (now {installed})",
        )


class Lease:
    """This OSD's lease from the MRC, renewed by every answered heartbeat.

    Counted from when the heartbeat was *sent* (the MRC counts from when it received
    it), on the monotonic clock; see docs/design/replication.md.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = -math.inf

    def granted(self, sent_at: float, seconds: float) -> None:
        self._until = max(self._until, sent_at + seconds * LEASE_SAFETY)

    def valid(self) -> bool:
        return self._clock() < self._until

    def now(self) -> float:
        return self._clock()


class KeyedLocks:
    """One trio lock per key, made on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (trio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Gates:
    """Per file: writes pass shared, a truncate exclusive, so that a truncate and the
    writes around it reach every replica in the order the primary applied them.
    A file's entry exists only while somebody holds or waits for its gate."""

    def __init__(self) -> None:
        self._shared: dict[str, int] = {}
        self._locks = KeyedLocks()  # file_id: taken briefly by shared, held by exclusive
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @asynccontextmanager
    async def shared(self, file_id: str) -> AsyncIterator[None]:
        async with self._locks.hold(file_id):  # waits for a truncate in progress
            self._shared[file_id] = self._shared.get(file_id, 0) + 1
        try:
            yield
        finally:
            self._shared[file_id] -= 1
            if not self._shared[file_id]:
                del self._shared[file_id]
                self._notify()

    @asynccontextmanager
    async def exclusive(self, file_id: str) -> AsyncIterator[None]:
        async with self._locks.hold(file_id):
            while self._shared.get(file_id):
                await self._changed.wait()
            yield


class Replication:
    def __init__(
        self,
        store: ObjectStore,
        uuid: str,
        pool: Pool,
        mrc: str,
        *,
        lease: Lease,
        peers: dict[str, str],
        peer_timeout: float,
        forward_deadline: float,
        run: Callable[..., Awaitable[Any]],
    ) -> None:
        self._store = store
        self.uuid = uuid
        self._pool = pool
        self._mrc = mrc
        self.lease = lease
        self._peers = peers  # OSD uuid -> address, refreshed by the heartbeat
        self._peer_timeout = peer_timeout
        self._forward_deadline = forward_deadline
        self._run = run  # runs a store call in a worker thread
        self.objects = KeyedLocks()  # (file_id, objno): orders a column's writes
        self.gates = Gates()  # file_id: writes shared, truncates exclusive
        self._files = KeyedLocks()  # file_id: one reconciliation at a time
        self._reconciled: dict[str, int] = {}  # file_id -> version reconciled at
        self._reconciling: set[str] = set()
        self._health = Health()  # peers that failed to answer lately are asked last
        self.nursery: trio.Nursery | None = None  # for background reconciliations

    # ------------------------------------------------------------------ versions
    async def check_version(
        self, file_id: str, xloc: XLocSet, then: Callable[[], T] | None = None
    ) -> tuple[bool, T | None]:
        """Refuse an older XLocSet than the installed one; install a newer one; then run
        ``then`` (a store call) if given. Returns (whether this found the file new here,
        ``then``'s result). New: nothing of it held, no version installed, and this the
        first version of a file, whose replicas all started empty.

        The version known in memory is checked without a worker thread (the common
        case); only a version not in memory, or a newer one, goes to the store, in the
        same worker-thread call as ``then``."""
        known = self._store.cached_xloc_version(file_id)
        if known is not None and xloc.version <= known:
            _refuse_older(file_id, xloc, known)
            return False, (None if then is None else await self._run(then))

        def admit() -> tuple[bool, T | None]:
            installed, held = self._store.admit_xloc(file_id, xloc.version)
            _refuse_older(file_id, xloc, installed)
            new = installed == 0 and not held and xloc.version == FIRST_XLOC_VERSION
            return new, (None if then is None else then())

        return await self._run(admit)

    def require_primary(self, file_id: str, xloc: XLocSet, column: int) -> None:
        group = xloc.group(column)
        if not group or group[0] != self.uuid:
            raise XfsError(
                errno.ESTALE, f"OSD {self.uuid} is not the primary of {file_id} in this XLocSet"
            )
        if not self.lease.valid():
            raise XfsError(errno.EAGAIN, f"OSD {self.uuid} holds no lease from the MRC")

    def require_peer(self, peer: str, file_id: str, xloc: XLocSet, column: int) -> None:
        """A forward must come from the group's primary in the XLocSet it names."""
        group = xloc.group(column)
        if not group or peer != f"osd:{group[0]}" or self.uuid not in group:
            raise XfsError(
                errno.EACCES, f"{peer} is not the primary of {file_id} for OSD {self.uuid}"
            )

    async def begin(
        self,
        file_id: str,
        xloc: XLocSet,
        xcap: XCap,
        column: int,
        then: Callable[[], T] | None = None,
    ) -> T | None:
        """Everything a primary checks before it acts on a client's request; then
        ``then`` (the store call that acts, in the same worker-thread call as the version
        check when that needs one), whose result is returned.

        A file new here at its first version needs no reconciliation: every replica
        started empty with it, and every write to it passes this primary, which holds
        nothing yet. (Had an earlier run of this OSD acted for it and lost it all in a
        crash, no fsync covered any of it: an fsync makes the file's directory here
        durable.)"""
        self.require_primary(file_id, xloc, column)
        try:
            new, result = await self.check_version(file_id, xloc, then)
        except CorruptObject:  # the version passed; ``then`` found a bad copy here
            self._reconcile_once(file_id, xloc, xcap, column, new=False)
            raise
        self._reconcile_once(file_id, xloc, xcap, column, new=new)
        return result

    def _reconcile_once(
        self, file_id: str, xloc: XLocSet, xcap: XCap, column: int, *, new: bool
    ) -> None:
        """Reconcile the group at this version unless done (or, for a new file, moot)."""
        if self._reconciled.get(file_id) != xloc.version:
            if new and not xloc.filling:
                self._reconciled[file_id] = xloc.version
            else:
                self.start_reconcile(file_id, xloc, xcap, column)

    # ------------------------------------------------------------------ forwarding
    async def forward(
        self,
        xloc: XLocSet,
        xcap: XCap,
        column: int,
        method: Method[Req, Resp],
        request: Req,
    ) -> list[Resp]:
        """Send ``request`` to every other OSD of the group; all must apply it."""
        results: list[Resp] = []
        errors: list[XfsError] = []

        async def one(osd: str) -> None:
            try:
                reply = await self._forward_one(osd, xloc, xcap, method, request)
            except XfsError as e:
                errors.append(e)
            else:
                if reply is not None:
                    results.append(reply)

        async with trio.open_nursery() as n:
            for osd in xloc.group(column)[1:]:
                n.start_soon(one, osd)
        if errors:
            raise stale_first(errors)
        return results

    async def _forward_one(
        self, osd: str, xloc: XLocSet, xcap: XCap, method: Method[Req, Resp], request: Req
    ) -> Resp | None:
        """The reply of ``osd``; None if the MRC dropped it from the file meanwhile."""
        deadline = self.lease.now() + self._forward_deadline
        while True:
            try:
                return await self.call(osd, method, request)
            except (XfsError, trio.TooSlowError) as e:
                if not unreachable(e):
                    raise
                failure = e
            log.info("replica %s of %s did not answer: %s", osd, xcap.file_id, failure)
            try:
                with trio.fail_after(self._peer_timeout):
                    reply = await self._pool.call(
                        self._mrc,
                        MRC.replica_failed,
                        ReplicaFailed(xcap, xloc.version, osd),
                        expect=Kind.MRC,
                    )
            except (XfsError, trio.TooSlowError) as e:
                log.warning("could not report %s of %s to the MRC: %s", osd, xcap.file_id, e)
            else:
                if all(osd not in r.osds for r in reply.xloc.replicas):
                    await self._run(
                        self._store.install_xloc_version, xcap.file_id, reply.xloc.version
                    )
                    log.warning(
                        "replica %s dropped from %s (now XLocSet version %d)",
                        osd,
                        xcap.file_id,
                        reply.xloc.version,
                    )
                    return None
            if self.lease.now() > deadline:
                raise XfsError(errno.EIO, f"replica {osd} of {xcap.file_id} unreachable: {failure}")
            await trio.sleep(RETRY_PAUSE)

    async def call(self, osd: str, method: Method[Req, Resp], request: Req) -> Resp:
        address = self._peers.get(osd)
        if address is None:
            raise XfsError(errno.EHOSTDOWN, f"no address known for OSD {osd}")
        with trio.fail_after(self._peer_timeout):
            return await self._pool.call(address, method, request, expect=f"osd:{osd}")

    # ------------------------------------------------------------------ reconciling
    def start_reconcile(
        self, file_id: str, xloc: XLocSet, xcap: XCap, column: int, *, again: bool = False
    ) -> None:
        """Reconcile in the background (``again``: even if done at this version)."""
        if file_id in self._reconciling or self.nursery is None:
            return
        if again and self._reconciled.get(file_id) == xloc.version:
            del self._reconciled[file_id]
        self._reconciling.add(file_id)
        self.nursery.start_soon(self._reconcile_quietly, file_id, xloc, xcap, column)

    async def _reconcile_quietly(
        self, file_id: str, xloc: XLocSet, xcap: XCap, column: int
    ) -> None:
        try:
            await self.reconcile(file_id, xloc, xcap, column)
        except (XfsError, trio.TooSlowError) as e:
            log.warning("reconciling %s at version %d failed: %s", file_id, xloc.version, e)
        except Exception:
            log.exception("bug reconciling %s", file_id)
        finally:
            self._reconciling.discard(file_id)

    async def reconcile(self, file_id: str, xloc: XLocSet, xcap: XCap, column: int) -> None:
        """Bring every other OSD of the group to this primary's state, then report the
        ones that were filling as filled. Writes go on meanwhile (see the design)."""
        async with self._files.hold(file_id):
            if self._reconciled.get(file_id, -1) >= xloc.version:
                return
            await self.check_version(file_id, xloc)
            # writes that passed an older version's check finish before the snapshot;
            # later ones are refused (ESTALE) or were checked against this version
            async with self.gates.exclusive(file_id):
                pass
            mine = {o: (c, n) for o, c, n in await self._run(self._store.sums, file_id)}
            group = xloc.group(column)
            filling = set(xloc.filling)

            failed: list[str] = []

            async def bring(osd: str) -> None:
                try:
                    theirs = await self.call(osd, OSD.sums, FileOp(xcap, xloc))
                    await self._bring(osd, file_id, xloc, xcap, mine, theirs)
                except (XfsError, trio.TooSlowError) as e:
                    log.warning("reconciling %s with %s failed: %s", file_id, osd, e)
                    failed.append(osd)

            rw = xloc.update_policy is UpdatePolicy.RW
            to_fill = [o for o in group[1:] if o in filling]
            async with trio.open_nursery() as n:
                for osd in group[1:] if rw else to_fill:
                    n.start_soon(bring, osd)
            if failed:  # the next request, or the healer's next sync, tries again
                return
            self._reconciled[file_id] = xloc.version
            for osd in to_fill:
                with trio.fail_after(self._peer_timeout):
                    await self._pool.call(
                        self._mrc,
                        MRC.replica_filled,
                        ReplicaFilled(xcap, xloc.version, osd),
                        expect=Kind.MRC,
                    )
                log.info("replica %s of %s filled at version %d", osd, file_id, xloc.version)

    async def _bring(
        self,
        osd: str,
        file_id: str,
        xloc: XLocSet,
        xcap: XCap,
        mine: dict[int, tuple[int, int]],
        theirs: ObjSums,
    ) -> None:
        held = {s.objno: (s.crc, s.length) for s in theirs.objects}
        differ = sorted(
            {o for o in mine if held.get(o) != mine[o]} | {o for o in held if o not in mine}
        )
        for objno in differ:
            async with self.objects.hold((file_id, objno)):
                # read again under the lock: a write may have changed it since the sums
                try:
                    data = await self._run(self._store.load, file_id, objno)
                except CorruptObject:
                    data = await self.repair(file_id, xloc, xcap, 0, objno, exclude={osd})
                await self.call(osd, OSD.put, ObjPut(xcap, xloc, objno, data))

    # ------------------------------------------------------------------ repair
    async def repair(
        self,
        file_id: str,
        xloc: XLocSet,
        xcap: XCap,
        column: int,
        objno: int,
        *,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> bytes | None:
        """A good copy of an object from another complete replica, stored here too.

        For a corrupt object here (checksum failure) and for partial replicas filled on
        demand. None if no complete replica holds the object (a hole, or past the end).
        """
        complete = [
            r.osds[column]
            for r in xloc.replicas
            if r.complete and column < len(r.osds) and r.osds[column] != self.uuid
        ]
        failures = []
        stripe = xloc.replicas[0].striping.stripe_size
        for osd in sorted(complete, key=self._health.recently_failed):
            if osd in exclude:
                continue
            try:
                reply = await self.call(osd, OSD.fetch, ObjRead(xcap, xloc, objno, 0, stripe))
            except (XfsError, trio.TooSlowError) as e:
                failures.append(f"{osd}: {e}")
                self._health.failed(osd)
                continue
            self._health.ok(osd)
            if not reply.held:
                return None
            await self._run(self._put_local, file_id, objno, reply.data, xcap.truncate_epoch)
            log.warning("object %d of %s repaired from replica %s", objno, file_id, osd)
            return bytes(reply.data)
        raise XfsError(
            errno.EIO, f"no good copy of object {objno} of {file_id}: {'; '.join(failures)}"
        )

    def _put_local(self, file_id: str, objno: int, data: bytes, epoch: int) -> None:
        self._store.put(file_id, objno, data, epoch=epoch)
