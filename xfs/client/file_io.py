"""Striped reads and writes of one open file (RAID0 over the OSDs of its replica).

All handles of one inode in one session share an ``OpenFile``. Writes are gathered per
object and sent as whole-object (or whole-range) requests in the background, a bounded
number at a time, so the kernel's write calls return quickly and the OSDs of all stripe
columns work in parallel. Reads fetch whole objects, keep the last few, and prefetch the
next ones when access is sequential. Errors of background writes are kept and raised by
the next write, flush or fsync, as on any POSIX system with a write-back cache.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import trio

from xfs.client.dirty import Dirty
from xfs.client.failover import call_osd
from xfs.common.striping import Piece, pieces
from xfs.proto.errors import XfsError
from xfs.proto.methods import OSD, FileOp, ObjData, ObjRead, ObjWrite
from xfs.proto.records import FileLayout, Replica

if TYPE_CHECKING:
    from xfs.client.session import Session

log = logging.getLogger(__name__)

# Unsent bytes one open file gathers (the oldest object goes out beyond): as many as 8
# whole objects of 1 MiB, in as many objects as scattered writes touch, up to 1,024.
DIRTY_LIMIT_BYTES = 8 << 20
DIRTY_LIMIT_OBJECTS = 1024


def merge_open_flags(held: int | None, new: int) -> int:
    """The flags to renew an XCap with: the union of the access modes of all opens.

    Only the access mode and O_APPEND are kept: renewing must never truncate or create.
    """
    modes = {new & os.O_ACCMODE} | (set() if held is None else {held & os.O_ACCMODE})
    if os.O_RDWR in modes or modes == {os.O_RDONLY, os.O_WRONLY}:
        access = os.O_RDWR
    else:
        (access,) = modes
    return access | ((new | (held or 0)) & os.O_APPEND)


def laid_over(held: bytes, length: int, written: list[tuple[int, bytes]]) -> bytes:
    """``length`` bytes of an object range: ``held`` (what the OSD returned, short where
    it holds nothing: zeros, as a hole reads), with each (at, bytes) of ``written`` over
    it."""
    out = bytearray(length)
    out[: len(held)] = held[:length]
    for at, data in written:
        out[at : at + len(data)] = data
    return bytes(out)


class _Source:
    """An open file's layout, for ``failover``: renewed as the file renews it."""

    def __init__(self, f: OpenFile) -> None:
        self._f = f

    async def layout(self) -> FileLayout:
        return await self._f.fresh_layout()

    async def renew(self, refused: FileLayout) -> FileLayout:
        return await self._f._renewed(refused)


class OpenFile:
    def __init__(self, session: Session, ino: int, layout: FileLayout, flags: int) -> None:
        self.session = session
        self.ino = ino
        self.layout = layout
        self.flags = flags
        self.refs = 0
        self.size = layout.attr.size
        self.size_dirty = False
        self._dirty: OrderedDict[int, Dirty] = OrderedDict()
        self._dirty_bytes = 0  # bytes in them
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._fetching: dict[int, trio.Event] = {}
        self._inflight = 0
        self._drained = trio.Event()
        self._drained.set()
        window = session.write_window * (1 << 20) // self.stripe_size
        self._slots = trio.Semaphore(max(2, window))  # objects in flight
        self._error: XfsError | None = None
        self._renewing: trio.Lock = trio.Lock()
        self._last_read_end = -1
        self._writes = 0  # bumped by every write, so a fetch that raced one is not cached
        self._last_send: dict[int, trio.Event] = {}  # per object: sends land in write order
        self._unsynced = False  # written since the OSDs last synced this file
        self._stale = False  # the XCap must be renewed before the next use (truncated)
        # (bytes the OSDs hold, file size then), learnt when our writes were synced
        self.allocated: tuple[int, int] | None = None
        # made by this session's create, and everything sent of it so far sent durably
        # (no truncate either): an fsync that sends all of it durably needs no OSD fsync
        self.fresh = False
        # made under a directory lease, its create not landed on the MRC yet: the layout
        # is a placeholder until this returns the real one (xfs/client/dirleases.py)
        self.landing: Callable[[], Awaitable[FileLayout | None]] | None = None

    # ------------------------------------------------------------------ layout
    @property
    def replica(self) -> Replica:
        return self.layout.xloc.replicas[0]

    @property
    def stripe_size(self) -> int:
        return self.replica.striping.stripe_size

    @property
    def width(self) -> int:
        return len(self.replica.osds)

    async def fresh_layout(self) -> FileLayout:
        """The layout, with its XCap renewed first if it is about to expire."""
        if self.landing is not None:
            await self._land()
        margin = self.session.xcap_renew_margin
        if not self._stale and self.layout.xcap.expires - self.session.clock() > margin:
            return self.layout
        async with self._renewing:
            if self._stale or self.layout.xcap.expires - self.session.clock() <= margin:
                self.layout = await self.session.reopen(self.ino, self.flags, want=self.size)
                self._stale = False
        return self.layout

    async def _land(self) -> None:
        async with self._renewing:
            if self.landing is not None:
                landed = await self.landing()
                if landed is None:  # made with no layout: opening it places it
                    flags = self.flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL)
                    landed = await self.session.reopen(self.ino, flags)
                self.layout = landed
                self.landing = None
                window = self.session.write_window * (1 << 20) // self.stripe_size
                self._slots = trio.Semaphore(max(2, window))

    def renew_xcap(self) -> None:
        """Renew the XCap before its next use (the session's certificate changed)."""
        self._stale = True

    async def _renewed(self, refused: FileLayout) -> FileLayout:
        """A new XCap after an OSD refused ``refused``'s (unless one came meanwhile)."""
        async with self._renewing:
            if self.layout is refused:
                self.layout = await self.session.reopen(self.ino, self.flags, want=self.size)
                self._stale = False
        return self.layout

    async def _osd(
        self,
        objno: int,
        call: Callable[[FileLayout, str], Awaitable[object]],
        *,
        read: bool = False,
    ) -> object:
        """``call`` on the OSD of ``objno``, with failover (see ``failover``)."""
        return await call_osd(self.session, _Source(self), objno, call, read=read)

    def opened(self, flags: int) -> None:
        """Another open of this inode: close-to-open, so cached data is dropped."""
        self.refs += 1
        self.flags = merge_open_flags(self.flags if self.refs > 1 else None, flags)
        self._cache.clear()

    # ------------------------------------------------------------------ writing
    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def write(self, offset: int, data: bytes) -> int:
        self._raise_error()
        if self.landing is not None:
            await self._land()  # (the stripe size is the real layout's)
        if 0 <= self.layout.xcap.max_size < offset + len(data):
            await self._room_for(offset + len(data))
        view = memoryview(data)
        for piece in pieces(offset, len(data), self.stripe_size):
            chunk = view[piece.buf_offset : piece.buf_offset + piece.length]
            while True:  # other requests (reads, mmap write-back) may run during an await
                dirty = self._dirty.get(piece.objno)
                if dirty is None:
                    whole = piece.offset == 0 and piece.length == self.stripe_size
                    # a whole object goes out as the caller's bytes, without a copy
                    buf = chunk if whole and isinstance(data, bytes) else bytearray(chunk)
                    dirty = self._dirty[piece.objno] = Dirty(piece.offset, buf)
                    self._dirty_bytes += dirty.held
                    break
                if not dirty.full() or dirty.joins(piece.offset, piece.length):
                    held = dirty.held
                    dirty.put(piece.offset, chunk)
                    self._dirty_bytes += dirty.held - held
                    break
                await self._start_flush(piece.objno)
            # No await since the data went into the dirty buffer: a fetch that started
            # before sees the bumped counter and does not cache what it read, and a
            # cached copy is patched, so reading back what we wrote needs no fetch.
            cached = self._cache.get(piece.objno)
            if cached is not None:
                patched = bytearray(cached)
                if piece.offset > len(patched):
                    patched.extend(bytes(piece.offset - len(patched)))  # as the OSD fills
                patched[piece.offset : piece.offset + piece.length] = chunk
                self._cache[piece.objno] = bytes(patched)
            self._writes += 1
            if dirty.whole(self.stripe_size):
                await self._start_flush(piece.objno)
        self.size = max(self.size, offset + len(data))
        self.size_dirty = True
        self._unsynced = True
        while self._dirty_bytes > DIRTY_LIMIT_BYTES or len(self._dirty) > DIRTY_LIMIT_OBJECTS:
            await self._start_flush(next(iter(self._dirty)))
        return len(data)

    async def _room_for(self, end: int) -> None:
        """Quota (docs/design/quotas.md): the XCap's voucher must reach ``end`` before
        bytes up to it are taken. Our size goes to the MRC first (the data it counts on
        the OSDs), then a new XCap is asked for; EDQUOT if its voucher still falls short."""
        await self.flush()
        async with self._renewing:
            self.layout = await self.session.reopen(self.ino, self.flags, want=end)
            self._stale = False
        if 0 <= self.layout.xcap.max_size < end:
            raise XfsError(
                errno.EDQUOT,
                f"inode {self.ino}: the quota leaves room up to byte "
                f"{self.layout.xcap.max_size}, not {end}",
            )

    async def _start_flush(self, objno: int, *, sync: bool = False) -> None:
        """Send object ``objno``'s dirty data in the background (``sync``: durably on
        every replica before the OSDs answer)."""
        if objno not in self._dirty:
            return
        await self._slots.acquire()
        dirty = self._dirty.pop(objno, None)
        if dirty is None:  # another request sent it while we waited for a slot
            self._slots.release()
            return
        self._dirty_bytes -= dirty.held
        if not sync:
            self.fresh = False
        if not self._inflight:  # a new event only when drained: waiters keep theirs
            self._drained = trio.Event()
        self._inflight += 1
        before = self._last_send.get(objno)
        done = self._last_send[objno] = trio.Event()
        self.session.nursery.start_soon(self._send, objno, dirty, before, done, sync)

    async def _send(
        self, objno: int, dirty: Dirty, before: trio.Event | None, done: trio.Event, sync: bool
    ) -> None:
        try:
            if before is not None:
                await before.wait()  # an older write of this object must land first

            # dirty left _dirty before it was sent: nothing changes it any more, and
            # framing sends any buffer as a payload as it is
            offset, data, extents = dirty.wire()

            async def call(layout: FileLayout, osd: str) -> object:
                request = ObjWrite(
                    layout.xcap, layout.xloc, objno, offset, cast(bytes, data), sync, extents
                )
                return await self.session.osd_call(layout, osd, OSD.write, request)

            await self._osd(objno, call)
        except XfsError as e:
            log.warning("write of %d:%d failed: %s", self.ino, objno, e)
            self._error = self._error or e
        except trio.TooSlowError:
            self._error = self._error or XfsError(errno.EIO, "OSD did not answer in time")
        finally:
            done.set()
            if self._last_send.get(objno) is done:
                del self._last_send[objno]
            self._slots.release()
            self._inflight -= 1
            if not self._inflight:
                self._drained.set()

    async def flush_data(self) -> None:
        """Send every dirty object and wait until all writes are acknowledged."""
        for objno in list(self._dirty):
            await self._start_flush(objno)
        await self._drained.wait()
        self._raise_error()

    async def flush(self, *, sync_mrc: bool = False) -> None:
        """Data durable on the OSDs, then the size to the MRC (what close() guarantees).
        With ``sync_mrc``, the MRC's journal durable too, in the same round trip as the
        size if there is one (fsync(2))."""
        await self.flush_data()
        if self._unsynced:
            await self._sync_osds()
        if self.size_dirty:
            self.size_dirty = False
            try:
                layout = await self.fresh_layout()
                await self.session.update_size(self.ino, self.size, layout.xcap, sync=sync_mrc)
            except BaseException:
                self.size_dirty = True
                raise
        elif sync_mrc:
            await self.session.sync()

    async def fsync(self) -> None:
        """Data and size durable on every replica and on the MRC, with every metadata
        change before (fsync(2)).

        A file this session created, whose dirty data is all of it and nothing of which
        went out before except durably, is sent durably (``ObjWrite.sync``) and needs no
        OSD fsync after: a small file written and fsynced costs one OSD round trip."""
        writes = self._writes
        synced = False
        if self.fresh and self._inflight == 0 and self._dense():
            for objno in list(self._dirty):
                await self._start_flush(objno, sync=True)
            await self._drained.wait()
            self._raise_error()
            synced = self.fresh and self._writes == writes  # nothing written meanwhile
        if synced:
            self.allocated = (self.size, self.size)
        # else fsync reaches the OSDs, even for data sent earlier
        self._unsynced = not synced
        await self.flush(sync_mrc=True)

    def _dense(self) -> bool:
        """Whether the dirty buffers hold all of the file, from byte 0 to its size."""
        stripe = self.stripe_size
        objects = -(-self.size // stripe)
        if len(self._dirty) != objects:
            return False
        for objno, dirty in self._dirty.items():
            length = min(stripe, self.size - objno * stripe)
            if not dirty.whole(length) or dirty.end != length:
                return False
        return True

    async def _sync_osds(self) -> None:
        layout = await self.fresh_layout()
        held: list[int] = []

        async def call(layout: FileLayout, osd: str) -> object:
            request = FileOp(layout.xcap, layout.xloc)
            return await self.session.osd_call(layout, osd, OSD.fsync, request)

        async def sync(column: int) -> None:
            held.append((await self._osd(column, call)).allocated)  # type: ignore[attr-defined]

        async with trio.open_nursery() as n:
            for column in range(len(layout.xloc.replicas[0].osds)):
                n.start_soon(sync, column)
        self._unsynced = False
        self.allocated = (sum(held), self.size)

    def truncated(self, size: int, layout: FileLayout | None = None) -> None:
        """The file was truncated to ``size``: a new truncate epoch, so a new XCap, which
        ``layout`` (if given) carries; else the next use renews it."""
        self._stale = layout is None
        self.fresh = False
        if layout is not None:
            self.layout = layout
            self.landing = None
        self.size = size
        self._cache.clear()
        self._writes += 1
        self.size_dirty = False

    # ------------------------------------------------------------------ reading
    async def read(self, offset: int, length: int) -> bytes:
        self._raise_error()
        if self.landing is not None:
            await self._land()
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        parts = pieces(offset, end - offset, self.stripe_size)
        await self._landed_sends(parts)
        # Sequential reads fetch whole objects (cached, and the next ones prefetched);
        # a read elsewhere fetches only its own range of an object that is not cached,
        # so a small random read costs about what it reads. Our own writes not sent yet
        # are laid over what the OSD holds (docs/architecture.md, "Read").
        sequential = offset == self._last_read_end or offset == 0
        objects: dict[int, bytes] = {}
        ranges: dict[int, bytes] = {}
        overlays: dict[int, list[tuple[int, bytes]]] = {}
        # what the read's start sees, taken before any await: a cached object (patched
        # by our writes) as it is now, else our unsent bytes in it
        for p in parts:
            cached = self._cache.get(p.objno)
            if cached is not None:
                self._cache.move_to_end(p.objno)
                objects[p.objno] = cached
            elif (overlay := self._overlay(p)) is not None:
                overlays[p.objno] = overlay

        async def fetch(piece: Piece) -> None:
            if piece.objno in objects:
                return
            overlay = overlays.get(piece.objno)
            if overlay is not None:
                if overlay[0][0] == 0 and len(overlay[0][1]) == piece.length:
                    ranges[piece.objno] = overlay[0][1]  # all of it written here: no OSD
                    return
                await self._fetch_range(piece, ranges)
                ranges[piece.objno] = laid_over(ranges[piece.objno], piece.length, overlay)
            elif sequential or piece.objno in self._fetching:
                await self._fetch_into(piece.objno, objects)
            else:
                await self._fetch_range(piece, ranges)

        missing = [p for p in parts if p.objno not in objects]
        if len(missing) == 1:  # (most reads: no nursery)
            await fetch(missing[0])
        elif missing:
            async with trio.open_nursery() as n:
                for piece in missing:
                    n.start_soon(fetch, piece)
        if sequential:
            self._prefetch(parts[-1].objno + 1)
        self._last_read_end = end
        out = bytearray(end - offset)
        for piece in parts:
            if piece.objno in objects:
                held = objects[piece.objno][piece.offset : piece.offset + piece.length]
            else:
                held = ranges[piece.objno]
            if len(parts) == 1 and len(held) == len(out):
                return bytes(held)  # (bytes already: no copy)
            out[piece.buf_offset : piece.buf_offset + len(held)] = held
        return bytes(out)

    async def _landed_sends(self, parts: list[Piece]) -> None:
        """Wait until the OSDs hold every write of ours already sent to the objects of
        ``parts`` that are not cached (a cached object is patched by our writes)."""
        while True:
            pending = next(
                (
                    self._last_send[p.objno]
                    for p in parts
                    if p.objno in self._last_send and p.objno not in self._cache
                ),
                None,
            )
            if pending is None:
                break
            await pending.wait()  # the last send of an object waits for the ones before
        self._raise_error()

    def _overlay(self, piece: Piece) -> list[tuple[int, bytes]] | None:
        """Our unsent bytes within ``piece`` (``Dirty.within``), copied now, as the
        read's start sees them; None if there are none."""
        dirty = self._dirty.get(piece.objno)
        if dirty is None:
            return None
        return dirty.within(piece.offset, piece.length) or None

    async def _fetch_range(self, piece: Piece, out: dict[int, bytes]) -> None:
        """Bytes ``piece`` of its object (short past what the OSD holds), not cached."""

        async def call(layout: FileLayout, osd: str) -> object:
            local = self.session.local_reads
            if local is not None:  # an OSD of this host: read its file, if it lets us
                data = await local.read(layout, osd, piece.objno, piece.offset, piece.length)
                if data is not None:
                    return ObjData(data)
            request = ObjRead(layout.xcap, layout.xloc, piece.objno, piece.offset, piece.length)
            return await self.session.osd_call(layout, osd, OSD.read, request)

        reply = await self._osd(piece.objno, call, read=True)
        data: bytes = reply.data  # type: ignore[attr-defined]
        out[piece.objno] = data[: piece.length]

    def _settled(self, objno: int) -> bool:
        """Whether the OSD holds every write of ours to the object (none pending)."""
        return objno not in self._dirty and objno not in self._last_send

    def _prefetch(self, first: int) -> None:
        last = (self.size - 1) // self.stripe_size
        ahead = min(max(self.width, self.session.read_ahead), self.session.read_cache_objects)
        for objno in range(first, min(first + ahead, last + 1)):
            if objno not in self._cache and objno not in self._fetching and self._settled(objno):
                self.session.nursery.start_soon(self._fetch_quietly, objno)

    async def _fetch_quietly(self, objno: int) -> None:
        try:
            await self._fetch(objno)
        except (XfsError, trio.TooSlowError) as e:
            log.debug("prefetch of %d:%d failed: %s", self.ino, objno, e)
        except Exception:  # a prefetch is optional: a bug in it must not end the mount
            log.exception("bug in the prefetch of %d:%d", self.ino, objno)

    async def _fetch_into(self, objno: int, out: dict[int, bytes]) -> None:
        out[objno] = await self._fetch(objno)

    async def _fetch(self, objno: int) -> bytes:
        while True:
            cached = self._cache.get(objno)
            if cached is not None:
                self._cache.move_to_end(objno)
                return cached
            pending = self._fetching.get(objno)
            if pending is None:
                break
            # that fetch may fail or not cache; then the first waiter to wake fetches
            await pending.wait()
        done = self._fetching[objno] = trio.Event()
        writes = self._writes if self._settled(objno) else -1  # unsettled: never cache
        try:

            async def call(layout: FileLayout, osd: str) -> object:
                local = self.session.local_reads
                if local is not None:  # an OSD of this host: read its file, if it lets us
                    data = await local.read_object(layout, osd, objno, self.stripe_size)
                    if data is not None:
                        return ObjData(data)
                request = ObjRead(layout.xcap, layout.xloc, objno, 0, self.stripe_size)
                return await self.session.osd_call(layout, osd, OSD.read, request)

            reply = await self._osd(objno, call, read=True)
            data: bytes = reply.data  # type: ignore[attr-defined]
            if writes != self._writes:
                return data  # written meanwhile: good for this read only if flushed first
            self._cache[objno] = data
            while len(self._cache) > self.session.read_cache_objects:
                self._cache.popitem(last=False)
            return data
        finally:
            if self._fetching.get(objno) is done:
                del self._fetching[objno]
            done.set()
