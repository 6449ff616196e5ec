"""One grid identity's view of one volume: MRC calls, open files, striped I/O.

This is the async client library: the FUSE layer, the admin CLI and job tools all use
it. A ``Session`` is bound to one credential (its connection pool) and one volume. Every
call carries the caller-owned deadline ``io_timeout``; retries happen in the pool only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from xfs.client.appends import Appender
from xfs.client.dirleases import DirLeases, placeholder
from xfs.client.failover import FixedSource, call_osd
from xfs.client.file_io import OpenFile
from xfs.client.local_reads import LocalReads
from xfs.common.health import Health
from xfs.common.identity import Credential
from xfs.common.rpc import Pool
from xfs.proto.codec import Record
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    OSD,
    Access,
    ClientId,
    Close,
    CloseFiles,
    Create,
    Empty,
    FileOp,
    Ino,
    Link,
    LockArgs,
    LockHolder,
    Lookup,
    Method,
    MkNod,
    Open,
    ReadDir,
    ReleaseLocks,
    Remove,
    Removed,
    Rename,
    SetAttr,
    Symlink,
    UpdateSize,
    VolumeName,
    XattrGet,
    XattrSet,
)
from xfs.proto.records import (
    Attr,
    DirEntry,
    FileLayout,
    Identity,
    Kind,
    StatFS,
    VolumeInfo,
    XCap,
)

log = logging.getLogger(__name__)

LOCK_WAIT = 15.0  # seconds the MRC holds one F_SETLKW call before we ask again
# A file's last close waits this long, to go to the MRC with others in one call
# (``close_files``); reopened meanwhile, it is not sent at all. Files sealed on close are
# closed at once. See docs/design/metadata.md.
CLOSE_DELAY = 0.2
MAX_CLOSE_BATCH = 512

Req = TypeVar("Req", bound=Record)
Resp = TypeVar("Resp", bound=Record)


class Session:
    def __init__(
        self,
        *,
        pool: Pool,
        mrc: str,
        volume: str,
        identity: Identity,
        nursery: trio.Nursery,
        clock: Callable[[], float],
        io_timeout: float = 30.0,
        xcap_renew_margin: float = 60.0,
        osd_timeout: float = 10.0,
        write_window: int = 16,
        read_cache_objects: int = 16,
        read_ahead: int = 4,
        local_reads: bool = True,
    ) -> None:
        self.pool = pool
        self.mrc_address = mrc
        self.volume = volume
        self.identity = identity
        self.nursery = nursery
        self.clock = clock
        self.io_timeout = io_timeout  # an operation with no reachable server fails then
        self.osd_timeout = osd_timeout  # one OSD call; then failover (see ``failover``)
        self.health = Health()
        self.xcap_renew_margin = xcap_renew_margin
        self.write_window = write_window  # MiB of writes in flight per open file
        self.read_cache_objects = read_cache_objects
        self.read_ahead = read_ahead  # objects fetched ahead of a sequential reader
        self.files: dict[int, OpenFile] = {}
        self._client: str | None = None  # this session's lease on the MRC (see ``client``)
        self._client_lock = trio.Lock()
        self._renewer: trio.CancelScope | None = None
        self._opens: dict[int, int] = {}  # ino -> handles open (registered on the MRC)
        self._registering: dict[int, trio.Lock] = {}
        # which closes may have crossed a create on its way (see ``_close_crossed``)
        self._closes = 0  # a clock: ticks when a close is sent and when it comes back
        self._closing: dict[int, int] = {}  # ino -> its closes in flight
        self._closed_at: OrderedDict[int, int] = OrderedDict()  # ino -> _closes then
        self._closed_floor = 0  # the highest _closes forgotten from _closed_at
        self._later: dict[int, None] = {}  # inos whose close waits (CLOSE_DELAY)
        self._sending_later = False
        self.appends = Appender(self)  # O_APPEND writes and append leases
        self.dirs = DirLeases(self)  # creates under directory leases
        self.local_reads = LocalReads(clock, osd_timeout) if local_reads else None

    # ------------------------------------------------------------------ transport
    def use_credential(self, credential: Credential) -> None:
        """Act with a renewed credential of the same principal: new connections present
        it, and every open file's XCap (bound to the old certificate) is renewed before
        its next use."""
        self.pool.use_credential(credential.cert_path, credential.key_path)
        self.identity = credential.identity
        for f in self.files.values():
            f.renew_xcap()

    async def mrc(self, method: Method[Req, Resp], request: Req) -> Resp:
        if self.dirs.busy:
            await self.dirs.before(method, request)  # queued creates it depends on land first
        if self._client is not None and getattr(request, "client", False) is None:
            # a request that may name the caller's client lease names it (added here, so
            # also to one built before the lease was taken): the MRC must know the caller,
            # or it recalls the caller's own directory leases
            request = dataclasses.replace(request, client=self._client)  # type: ignore[type-var]
        with trio.fail_after(self.io_timeout):
            return await self.pool.call(self.mrc_address, method, request, expect=Kind.MRC)

    async def osd_call(
        self, layout: FileLayout, osd: str, method: Method[Req, Resp], request: Req
    ) -> Resp:
        address = layout.addresses.get(osd)
        if address is None:
            raise XfsError(errno.EIO, f"no address known for OSD {osd}")
        with trio.fail_after(self.io_timeout):
            return await self.pool.call(address, method, request, expect=f"osd:{osd}")

    # ------------------------------------------------------------------ namespace
    async def volume_info(self) -> VolumeInfo:
        return await self.mrc(MRC.volume_get, VolumeName(self.volume))

    async def lookup(self, parent: int, name: bytes) -> Attr:
        return self.own_view(await self.mrc(MRC.lookup, Lookup(self.volume, parent, name)))

    async def getattr(self, ino: int) -> Attr:
        return self.own_view(await self.mrc(MRC.getattr, Ino(self.volume, ino)))

    def own_view(self, attr: Attr) -> Attr:
        """Overlay what this session wrote but has not reported to the MRC yet."""
        f = self.files.get(attr.ino)
        if f is not None and f.size_dirty and f.size != attr.size:
            return dataclasses.replace(attr, size=max(f.size, attr.size))
        return attr

    async def setattr(self, ino: int, **changes: Any) -> Attr:
        if changes.get("size") is not None:
            await self.appends.give_back(ino)  # else the MRC recalls it from us
        f = self.files.get(ino)
        if f is not None and (changes.get("size") is not None or "mtime_ns" in changes):
            await f.flush()  # pending writes must not land after (or re-date) this change
        result = await self.mrc(MRC.setattr, SetAttr(self.volume, ino, **changes))
        if result.layout is not None:
            size = result.attr.size
            await self.truncate_osds(result.layout, size)
            if f is not None:
                # through a write descriptor (its XCap shown): the reply's XCap grants what
                # that one did, under the new truncate epoch, so no open (mode check) again
                f.truncated(size, result.layout if "xcap" in changes else None)
        return self.own_view(result.attr)

    async def truncate_osds(self, layout: FileLayout, size: int) -> None:
        """Truncate every stripe column (the primaries of replicated files forward it)."""
        source = FixedSource(self, layout, os.O_WRONLY)

        async def call(current: FileLayout, osd: str) -> object:
            request = FileOp(current.xcap, current.xloc, size)
            return await self.osd_call(current, osd, OSD.truncate, request)

        async with trio.open_nursery() as n:
            for column in range(len(layout.xloc.replicas[0].osds)):
                n.start_soon(call_osd, self, source, column, call)

    async def mknod(
        self, parent: int, name: bytes, mode: int, rdev: int = 0, umask: int = 0
    ) -> Attr:
        return await self.mrc(MRC.mknod, MkNod(self.volume, parent, name, mode, rdev, umask))

    async def mkdir(self, parent: int, name: bytes, mode: int, umask: int = 0) -> Attr:
        return await self.mrc(MRC.mkdir, MkNod(self.volume, parent, name, mode, 0, umask))

    async def unlink(self, parent: int, name: bytes) -> Removed:
        """Remove an entry; the parent's attributes right after, if the MRC sent them."""
        return await self.mrc(MRC.unlink, Remove(self.volume, parent, name))

    async def rmdir(self, parent: int, name: bytes) -> None:
        await self.mrc(MRC.rmdir, Remove(self.volume, parent, name))

    async def rename(
        self, parent: int, name: bytes, new_parent: int, new_name: bytes, flags: int = 0
    ) -> None:
        await self.mrc(MRC.rename, Rename(self.volume, parent, name, new_parent, new_name, flags))

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        return self.own_view(await self.mrc(MRC.link, Link(self.volume, ino, new_parent, new_name)))

    async def symlink(self, parent: int, name: bytes, target: bytes) -> Attr:
        return await self.mrc(MRC.symlink, Symlink(self.volume, parent, name, target))

    async def readlink(self, ino: int) -> bytes:
        return (await self.mrc(MRC.readlink, Ino(self.volume, ino))).target

    async def readdir(self, ino: int, cursor: int, limit: int = 1000) -> list[DirEntry]:
        reply = await self.mrc(MRC.readdir, ReadDir(self.volume, ino, cursor, limit))
        return reply.entries

    async def access(self, ino: int, mask: int) -> None:
        await self.mrc(MRC.access, Access(self.volume, ino, mask))

    async def sync(self) -> None:
        """Every metadata change acknowledged so far, durable on the MRC against a crash of
        its machine too (fsync(2) of a file or a directory)."""
        await self.mrc(MRC.sync, VolumeName(self.volume))

    async def statfs(self) -> StatFS:
        return await self.mrc(MRC.statfs, VolumeName(self.volume))

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        return (await self.mrc(MRC.getxattr, XattrGet(self.volume, ino, name))).value

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        await self.mrc(MRC.setxattr, XattrSet(self.volume, ino, name, value, flags))

    async def listxattr(self, ino: int) -> list[bytes]:
        return (await self.mrc(MRC.listxattr, Ino(self.volume, ino))).names

    async def removexattr(self, ino: int, name: bytes) -> None:
        await self.mrc(MRC.removexattr, XattrGet(self.volume, ino, name))

    async def update_size(self, ino: int, size: int, xcap: XCap, *, sync: bool = False) -> Attr:
        """Report a size we wrote, with the write XCap we wrote under; with ``sync``, and
        make every change so far durable (as :meth:`sync`)."""
        request = UpdateSize(self.volume, ino, size, xcap, sync=sync)
        return await self.mrc(MRC.update_size, request)

    # ------------------------------------------------------------------ client lease
    @property
    def client_id(self) -> str | None:
        """This session's client lease, if it has taken one."""
        return self._client

    async def client(self) -> str:
        """This session's client lease, taken on first use and renewed in the background.

        Open files and locks are registered on it; the MRC ends them when the lease is
        not renewed in time (this client died or was cut off)."""
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                lease = await self.mrc(MRC.client_open, Empty())
                self._client = lease.client
                self._renewer = trio.CancelScope()
                self.nursery.start_soon(self._renew, lease.lease_ns / 1e9)
            return self._client

    async def _renew(self, lease: float) -> None:
        assert self._renewer is not None
        with self._renewer:
            while True:
                await trio.sleep(lease / 3)
                client = self._client
                if client is None:
                    return
                try:
                    # bounded well inside the lease: one hung call must not lose it
                    with trio.fail_after(lease / 3):
                        await self.pool.call(
                            self.mrc_address, MRC.client_renew, ClientId(client), expect=Kind.MRC
                        )
                except XfsError as e:
                    if e.code != errno.ESTALE:
                        log.warning("renewing client lease %s failed: %s", client, e)
                        continue
                    await self._lease_lost(client)
                except trio.TooSlowError:
                    log.warning("renewing client lease %s timed out", client)

    async def _lease_lost(self, client: str) -> None:
        """The MRC ended our lease (we were unreachable too long): its locks are gone.
        Take a new lease and register the files still open on it."""
        log.error(
            "client lease %s ended on the MRC: locks held through it are lost, "
            "open files are registered again",
            client,
        )
        try:
            lease = await self.mrc(MRC.client_open, Empty())
        except (XfsError, trio.TooSlowError) as e:
            log.error("taking a new client lease failed (next renewal tries again): %s", e)
            return
        self._client = lease.client
        self.appends.lost()
        self.dirs.lost()
        for f in list(self.files.values()):
            async with self._registration(f.ino):
                if f.ino not in self._opens:
                    continue  # closed meanwhile
                try:
                    f.layout = await self.reopen(f.ino, f.flags & ~os.O_TRUNC)
                except (XfsError, trio.TooSlowError) as e:
                    log.error("registering open inode %d again failed: %s", f.ino, e)

    async def close_client(self) -> None:
        """Say goodbye: the MRC releases this client's opens and locks now."""
        if self.local_reads is not None:
            self.local_reads.close()
        with trio.move_on_after(self.io_timeout):
            await self.dirs.drain()  # queued creates go out under this lease
        if self._renewer is not None:
            self._renewer.cancel()
        client, self._client = self._client, None
        if client is not None:
            await self.mrc(MRC.client_close, ClientId(client))

    async def lock(
        self,
        ino: int,
        owner: int,
        family: str,
        mode: str,
        start: int,
        end: int,
        pid: int,
        *,
        wait: bool = False,
    ) -> LockHolder | None:
        """Set or remove a lock; None when done, else the lock in the way. With ``wait``
        this returns only once the lock is granted (the caller owns any deadline)."""
        client = await self.client()
        while True:
            args = LockArgs(
                self.volume,
                ino,
                client,
                owner,
                family,
                mode,
                start,
                end,
                pid,
                LOCK_WAIT if wait else 0.0,
            )
            if self.dirs.busy:
                await self.dirs.before(MRC.lock, args)  # (a file whose create is queued)
            with trio.fail_after(self.io_timeout + LOCK_WAIT):
                reply = await self.pool.call(self.mrc_address, MRC.lock, args, expect=Kind.MRC)
            if reply.granted:
                return None
            if not wait:
                return reply.holder

    async def test_lock(
        self, ino: int, owner: int, family: str, mode: str, start: int, end: int, pid: int
    ) -> LockHolder | None:
        args = LockArgs(self.volume, ino, await self.client(), owner, family, mode, start, end, pid)
        return (await self.mrc(MRC.test_lock, args)).holder

    async def release_locks(self, ino: int, owner: int, family: str) -> None:
        client = await self.client()
        await self.mrc(MRC.release_locks, ReleaseLocks(self.volume, ino, client, owner, family))

    # ------------------------------------------------------------------ files
    async def create(
        self,
        parent: int,
        name: bytes,
        mode: int,
        flags: int,
        umask: int = 0,
        *,
        absent: bool = False,
    ) -> OpenFile:
        """open(O_CREAT) of ``name`` in ``parent``. With ``absent`` (the caller knows the
        name is not there), under this session's lease of ``parent`` the create is queued
        and the file is ready at once (xfs/client/dirleases.py)."""
        if absent:
            attr = self.dirs.create(parent, name, mode, flags, umask)
            if attr is not None:
                self._opens[attr.ino] = self._opens.get(attr.ino, 0) + 1
                f = self._opened(placeholder(attr), flags)
                f.landing = self.dirs.landing(attr.ino)
                f.fresh = True  # no OSD holds anything of it
                return f
        request = Create(self.volume, parent, name, mode, flags, umask, await self.client())
        closes = self._closes
        layout = await self.mrc(MRC.create, request)
        ino = layout.attr.ino
        self._opens[ino] = self._opens.get(ino, 0) + 1
        self._later.pop(ino, None)  # a close not sent yet: the registration stands
        if self._close_crossed(ino, closes):
            # a close of this inode may have overtaken our registration: register again
            async with self._registration(ino):
                layout = await self.reopen(ino, flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL))
        made = layout.parent is not None and layout.parent.seq != layout.parent_was
        f = self._opened(layout, flags)
        # the MRC made it (its directory changed), so no OSD holds anything of it
        f.fresh = made and f.refs == 1 and f.size == 0
        return f

    async def open(self, ino: int, flags: int) -> OpenFile:
        # counted before any await, so a release racing this open does not unregister it
        self._opens[ino] = self._opens.get(ino, 0) + 1
        self._later.pop(ino, None)  # a close not sent yet: the registration stands
        try:
            async with self._registration(ino):
                f = self.files.get(ino)
                if f is not None:
                    await f.flush()  # our unreported writes must not hide behind the MRC's size
                layout = await self.reopen(ino, flags)
                if layout.attr.nlink == 0 and f is None and self._opens.get(ino) == 1:
                    # not open here, and no name leads to it any more: the kernel came by
                    # a name cached before another client replaced or removed it (a close
                    # of ours still waiting may have kept it). ESTALE: it looks again.
                    raise XfsError(errno.ESTALE, f"inode {ino} has no name any more")
                if flags & os.O_TRUNC and layout.attr.size == 0:
                    await self.truncate_osds(layout, 0)
                    if f is not None:
                        f.truncated(0)
                return self._opened(layout, flags)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._closed(ino)
            raise

    def _registration(self, ino: int) -> trio.Lock:
        """Orders the MRC's open registrations and closes of one inode."""
        lock = self._registering.get(ino)
        if lock is None:
            lock = self._registering[ino] = trio.Lock()
        return lock

    async def _closed(self, ino: int, later: bool = False) -> None:
        """One open of ``ino`` ended; after the last, tell the MRC (an unlinked file is
        freed, this client's locks on it go): at once, or with ``later`` within
        CLOSE_DELAY together with other closes."""
        left = self._opens.get(ino, 1) - 1
        if left > 0:
            self._opens[ino] = left
            return
        self._opens.pop(ino, None)
        if later and self._client is not None:
            self._later[ino] = None
            if not self._sending_later:
                self._sending_later = True
                self.nursery.start_soon(self._send_later)
            return
        async with self._registration(ino):
            if ino in self._opens or self._client is None:
                return  # opened again meanwhile: that registration stands
            self._closes_start([ino])
            try:
                await self.mrc(MRC.close, Close(self.volume, ino, self._client))
            finally:
                self._closes_end([ino])
                self.appends.closed(ino)  # the registration, and with it the lease, ended
                if ino not in self._opens:
                    self._registering.pop(ino, None)

    def _close_crossed(self, ino: int, since: int) -> bool:
        """Whether a close of ``ino`` was on its way at some time after ``_closes`` was
        ``since``: the MRC may then have taken it after a registration sent meanwhile
        (it runs the requests of one connection concurrently)."""
        return (
            ino in self._closing
            or self._closed_at.get(ino, 0) > since
            or self._closed_floor > since
        )

    def _closes_start(self, inos: list[int]) -> None:
        self._closes += 1
        for ino in inos:
            self._closing[ino] = self._closing.get(ino, 0) + 1
            self._note_closed(ino)

    def _closes_end(self, inos: list[int]) -> None:
        self._closes += 1
        for ino in inos:
            left = self._closing.pop(ino) - 1
            if left:
                self._closing[ino] = left
            self._note_closed(ino)

    def _note_closed(self, ino: int) -> None:
        self._closed_at[ino] = self._closes
        self._closed_at.move_to_end(ino)
        if len(self._closed_at) > 4096:
            self._closed_floor = self._closed_at.popitem(last=False)[1]

    async def _send_later(self) -> None:
        try:
            while self._later:
                await trio.sleep(CLOSE_DELAY)
                await self.send_closes()
        finally:
            self._sending_later = False

    async def send_closes(self) -> None:
        """Send the closes that wait, now (before a change that open files would block)."""
        while self._later:
            batch = sorted(self._later)[:MAX_CLOSE_BATCH]
            for ino in batch:
                del self._later[ino]
            async with contextlib.AsyncExitStack() as held:
                for ino in batch:  # in order: nobody else holds two of these locks
                    await held.enter_async_context(self._registration(ino))
                inos = [ino for ino in batch if ino not in self._opens]  # not reopened
                if not inos or self._client is None:
                    continue
                self._closes_start(inos)
                try:
                    await self.mrc(MRC.close_files, CloseFiles(self.volume, inos, self._client))
                except (XfsError, trio.TooSlowError) as e:
                    # the registrations end with this client's lease at the latest
                    log.warning("closing %d files on the MRC failed: %s", len(inos), e)
                finally:
                    self._closes_end(inos)
                    for ino in inos:
                        self.appends.closed(ino)  # registration and lease ended
                        if ino not in self._opens:
                            self._registering.pop(ino, None)

    async def reopen(self, ino: int, flags: int, *, want: int = 0) -> FileLayout:
        """The file opened again: a new XCap (its quota voucher reaching ``want``, if the
        quotas leave room for that)."""
        request = Open(self.volume, ino, flags, await self.client(), want)
        return await self.mrc(MRC.open, request)

    def _opened(self, layout: FileLayout, flags: int) -> OpenFile:
        ino = layout.attr.ino
        f = self.files.get(ino)
        if f is None:
            f = self.files[ino] = OpenFile(self, ino, layout, flags)
        else:
            f.layout = layout
            if not f.size_dirty:
                f.size = layout.attr.size
        f.opened(flags)
        return f

    async def release(self, f: OpenFile) -> None:
        try:
            await f.flush()
        finally:
            f.refs -= 1
            if f.refs <= 0 and self.files.get(f.ino) is f:
                del self.files[f.ino]
            # a file sealed when its last writer closes it is sealed at once
            await self._closed(f.ino, later=not f.layout.xloc.seal_on_close)

    async def status(self) -> Any:
        return await self.mrc(MRC.status, Empty())
