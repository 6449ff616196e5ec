"""The pyfuse3 operations: a thin layer that translates arguments, identities and errors.

Each request is made with the session of the calling process (its uid's credential, and
its groups where the credential store follows them: ``Sessions``); file and directory
handles remember the session that opened them. Inode numbers are the MRC's. The kernel's
lookup counts are tracked exactly (``InodeTable``).

The mount runs with ``default_permissions`` and POSIX ACLs negotiated: the kernel checks
every access against the attributes and ACLs we give it, mapped by the identity map, with
the calling process's own credentials, and may therefore cache entries and attributes
in every directory; the MRC checks again on every request that reaches it. Changes made
through this mount reach the kernel's cache in their replies (or by invalidation); those
of other clients within ``attr_timeout``/``entry_timeout``. See docs/design/permissions.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import itertools
import os
import stat
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from xfs.client import fuse_ext  # before pyfuse3: see xfs.client.fuse_ext

# isort: split
import pyfuse3

from xfs.client import acl_xattr, digests, readahead
from xfs.client.callers import caller, supplementary_groups
from xfs.client.errors import fuse_errors
from xfs.client.file_io import OpenFile
from xfs.client.handles import Handle
from xfs.client.idmap import IdentityMap
from xfs.client.inodes import InodeTable
from xfs.client.listings import Listings
from xfs.client.readahead import ReadAhead
from xfs.client.session import Session
from xfs.client.sessions import Sessions
from xfs.common import metrics
from xfs.proto import methods as locks
from xfs.proto.errors import XfsError
from xfs.proto.records import ROOT_INO, Attr

NOW_TOLERANCE_NS = 50_000_000  # a time this close to the clock came from UTIME_NOW

_LOCK_MODE = {fcntl.F_RDLCK: locks.READ, fcntl.F_WRLCK: locks.WRITE, fcntl.F_UNLCK: locks.UNLOCK}
_LOCK_TYPE = {locks.READ: fcntl.F_RDLCK, locks.WRITE: fcntl.F_WRLCK}
FALLOC_KEEP_SIZE = 0x01
FALLOC_PUNCH_HOLE = 0x02
FALLOC_ZERO_RANGE = 0x10
ZERO_CHUNK = 1 << 20
FRESH_FOR = 1.0  # seconds a directory's attributes from a change of ours answer a getattr


CAPS = b"security.capability"  # file capabilities: the kernel looks before each write
P = ParamSpec("P")
T = TypeVar("T")


def counts_as_change(
    fn: Callable[Concatenate[Operations, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Operations, P], Coroutine[Any, Any, T]]:
    """An operation that may change something: counted when it starts and when it ends,
    so a page read ahead meanwhile is not used (xfs/client/readahead.py)."""

    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: P.args, **kwargs: P.kwargs) -> T:
        self.changes += 1
        try:
            return await fn(self, *args, **kwargs)
        finally:
            self.changes += 1

    return wrapper


class Operations(pyfuse3.Operations):
    enable_writeback_cache = False
    enable_acl = True  # FUSE_POSIX_ACL: the kernel applies ACLs too (and default_permissions)

    def __init__(
        self,
        sessions: Sessions,
        idmap: IdentityMap,
        *,
        attr_timeout: float = 10.0,
        entry_timeout: float = 10.0,
        negative_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.sessions = sessions
        self.idmap = idmap
        self.inodes = InodeTable()
        self._attr_timeout = attr_timeout
        self._entry_timeout = entry_timeout
        self._negative_timeout = negative_timeout
        # the names of directories this mount made, while only it changes them: lookups
        # of other names there need no MRC call (xfs/client/listings.py)
        self.listings = Listings(min(entry_timeout, negative_timeout))
        self._fh = itertools.count(1)
        self._files: dict[int, Handle] = {}
        self._locked: dict[int, set[int]] = {}  # ino -> owners holding POSIX locks here
        self._dirs: dict[int, tuple[Session, int]] = {}
        # ino -> ctime last given to the kernel, for inodes with an access ACL: when it
        # changes the kernel's cached ACL is dropped (another client may have set it)
        self._acl_ctime: dict[int, int] = {}
        # ino -> (attributes, when): a directory's attributes that a change made here
        # came back with; the kernel dropped its own and asks once (see _fresh_dir)
        self._fresh: dict[int, tuple[Attr, float]] = {}
        self._allocated: dict[int, tuple[int, int]] = {}  # ino -> (bytes held, at size)
        # ino -> until when (monotonic) it is known to have no security.capability: the
        # kernel asks before every write(2), to drop it (file_remove_privs)
        self._no_caps: dict[int, float] = {}
        self.changes = 0  # operations that may change something, started and ended
        self._ahead = ReadAhead()

    # ------------------------------------------------------------------ helpers
    async def _session(self, ctx: pyfuse3.RequestContext) -> Session:
        if not self.sessions.follow_groups:
            return await self.sessions.get(ctx.uid)  # no /proc read on every request
        # the process may be gone already (an asynchronous request): its fsgid alone
        groups = supplementary_groups(ctx.pid) or ()
        return await self.sessions.get(caller(ctx.uid, ctx.gid, groups))

    def _attributes(self, attr: Attr) -> pyfuse3.EntryAttributes:
        self._note_acl(attr)
        e = pyfuse3.EntryAttributes()
        e.st_ino = attr.ino
        e.generation = 0
        e.entry_timeout = self._entry_timeout
        e.attr_timeout = self._attr_timeout
        e.st_mode = attr.mode
        e.st_nlink = attr.nlink
        e.st_uid = self.idmap.uid(attr.owner)
        e.st_gid = self.idmap.gid(attr.group)
        e.st_rdev = attr.rdev
        e.st_size = attr.size
        e.st_blksize = attr.blksize
        # holes take no space: what the OSDs hold, as the last sync of ours found it
        # while the size is still the one it was found for; else the file counts dense
        held, size = self._allocated.get(attr.ino, (attr.size, attr.size))
        e.st_blocks = (min(held if size == attr.size else attr.size, attr.size) + 511) // 512
        e.st_atime_ns = attr.atime_ns
        e.st_mtime_ns = attr.mtime_ns
        e.st_ctime_ns = attr.ctime_ns
        return e

    def _learn_allocation(self, f: OpenFile) -> None:
        if f.allocated is not None and self._allocated.get(f.ino) != f.allocated:
            self._allocated[f.ino] = f.allocated
            with contextlib.suppress(OSError):  # st_blocks the kernel cached is stale now
                pyfuse3.invalidate_inode(f.ino, attr_only=True)
            if len(self._allocated) > 100_000:  # a hint only: forget the oldest
                del self._allocated[next(iter(self._allocated))]

    def _note_acl(self, attr: Attr) -> None:
        """Drop the kernel's cached ACL of an inode whose ACL may have changed elsewhere:
        it has (or had) one and its ctime moved. Attributes only: takes no lock."""
        last = self._acl_ctime.get(attr.ino)
        if not attr.acl and last is None:
            return
        if last is not None and last != attr.ctime_ns:
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_inode(attr.ino, attr_only=True)
        if attr.acl:
            self._acl_ctime[attr.ino] = attr.ctime_ns
        else:
            self._acl_ctime.pop(attr.ino, None)

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        """Attributes for a reply that the kernel counts as a lookup."""
        self.inodes.looked_up(attr.ino)
        return self._attributes(attr)

    # ------------------------------------------------------------------ inodes
    @fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        left = self.listings.absent(parent_inode, name, time.monotonic())
        if left > 0:
            return self._absent(left)
        session = await self._session(ctx)
        attr = await self._read_ahead(session, parent_inode, name)
        if attr is not None:
            return self._entry(session.own_view(attr))
        try:
            attr = await session.lookup(parent_inode, name)
        except XfsError as e:
            if e.code != errno.ENOENT or self._negative_timeout <= 0:
                raise
            return self._absent(self._negative_timeout)
        return self._entry(attr)

    async def _read_ahead(self, session: Session, parent: int, name: bytes) -> Attr | None:
        """``name``'s attributes from a page of its directory read ahead, if one has it
        (or it is time to read one and it does)."""
        key, now = (id(session), parent), time.monotonic()
        attr = self._ahead.take(key, name, now, self.changes)
        if attr is not None:
            return attr
        cursor = self._ahead.missed(key, now)
        if cursor is None:
            return None
        asked = self.changes
        try:
            entries = await session.readdir(parent, cursor, readahead.PAGE)
        except XfsError:
            self._ahead.refused(key, now)  # (search permission without read, say)
            return None
        self._ahead.fill(key, entries, asked, now, complete=len(entries) < readahead.PAGE)
        return self._ahead.take(key, name, now, self.changes)

    @staticmethod
    def _absent(timeout: float) -> pyfuse3.EntryAttributes:
        """A negative entry: the kernel remembers the name is absent for ``timeout`` s."""
        e = pyfuse3.EntryAttributes()
        e.st_ino = 0
        e.entry_timeout = timeout
        return e

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            self.inodes.forget(ino, n)

    @fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        fresh = self._fresh.pop(inode, None)
        if fresh is not None and time.monotonic() - fresh[1] < FRESH_FOR:
            return self._attributes(fresh[0])
        session = await self._session(ctx)
        return self._attributes(await session.getattr(inode))

    def _changed_here(
        self,
        session: Session,
        parent: int,
        after: Attr | None,
        was: int,
        *,
        added: bytes | None = None,
        added_ino: int = 0,
        removed: bytes | None = None,
    ) -> None:
        """A create or unlink of ours in ``parent`` came back with the directory's
        attributes right after it (if the MRC sent them) and its change number before.
        After a few, the session asks for the directory's lease."""
        if after is None:
            self.listings.forget(parent)
            return
        now = time.monotonic()
        leased = session.dirs.dir_attr(parent) is not None
        self.listings.changed(
            parent,
            was,
            after.seq,
            now,
            added=added,
            added_ino=added_ino,
            removed=removed,
            leased=leased,
        )
        self._fresh_dir(after)
        if not leased and session.dirs.wanted(parent):
            adopt = functools.partial(self._adopt, parent)
            session.dirs.ask(after, adopt, made=False, on_recall=self.listings.forget)

    def _adopt(self, ino: int, seq: int, names: dict[bytes, int] | None) -> bool:
        """A directory leased by a session after it was made: its names, read under the
        lease, are the listing from now on."""
        return names is not None and self.listings.load(ino, seq, names, time.monotonic())

    def _fresh_dir(self, attr: Attr) -> None:
        """Keep a directory's attributes as a change of ours left them: with
        default_permissions the kernel drops its cached ones on every create and unlink
        and asks for them at the next walk through the directory, a round trip to the MRC
        per file that this answers (once, within FRESH_FOR seconds)."""
        if len(self._fresh) >= 1024:
            self._fresh.clear()
        self._fresh[attr.ino] = (attr, time.monotonic())

    @fuse_errors
    @counts_as_change
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        handle = self._files.get(fh) if fh is not None else None
        session = handle.session if handle is not None else await self._session(ctx)
        changes: dict[str, Any] = {}
        if fields.update_mode:
            changes["mode"] = attr.st_mode & 0o7777
        if fields.update_uid:
            changes["owner"] = self.idmap.principal(attr.st_uid)
        if fields.update_gid:
            changes["group"] = self.idmap.group(attr.st_gid)
        if fields.update_size:
            changes["size"] = attr.st_size
            if handle is not None and handle.flags & os.O_ACCMODE != os.O_RDONLY:
                # ftruncate(2) through a descriptor open for writing: its open authorises
                changes["xcap"] = (await handle.file.fresh_layout()).xcap
        now = time.time_ns()
        if fields.update_atime:
            if abs(attr.st_atime_ns - now) < NOW_TOLERANCE_NS:
                changes["atime_now"] = True
            else:
                changes["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            if abs(attr.st_mtime_ns - now) < NOW_TOLERANCE_NS:
                changes["mtime_now"] = True
            else:
                changes["mtime_ns"] = attr.st_mtime_ns
        if not changes:
            changes["ctime_now"] = True  # chown(f, -1, -1) sets ctime alone, as on Linux
        return self._attributes(await session.setattr(inode, **changes))

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await (await self._session(ctx)).readlink(inode)

    @fuse_errors
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        await (await self._session(ctx)).access(inode, mode)
        return True

    # ------------------------------------------------------------------ entries
    @fuse_errors
    @counts_as_change
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        session = await self._session(ctx)
        self.listings.forget(parent_inode)
        attr = await session.mknod(parent_inode, name, mode, rdev, ctx.umask)
        return self._entry(attr)

    @fuse_errors
    @counts_as_change
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        session = await self._session(ctx)
        self.listings.forget(parent_inode)
        attr = await session.mkdir(parent_inode, name, mode, ctx.umask)
        self.listings.made(attr.ino, attr.seq, time.monotonic())
        if attr.seq > 0:
            # creates in it need not wait for the MRC (xfs/client/dirleases.py)
            def whole_at(seq: int, names: dict[bytes, int] | None) -> bool:
                return self.listings.at(attr.ino, seq)

            session.dirs.ask(attr, whole_at, made=True, on_recall=self.listings.forget)
        return self._entry(attr)

    @fuse_errors
    @counts_as_change
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        session = await self._session(ctx)
        now = time.monotonic()
        ino = self.listings.ino_of(parent_inode, name, now)
        if ino and session.dirs.unlink(parent_inode, name, ino):  # queued under the lease
            self.listings.removed(parent_inode, name, now)
            parent = session.dirs.dir_attr(parent_inode)
            if parent is not None:
                self._fresh_dir(parent)
            return
        try:
            removed = await session.unlink(parent_inode, name)
        except BaseException:
            self.listings.forget(parent_inode)
            raise
        self._changed_here(session, parent_inode, removed.parent, removed.parent_was, removed=name)

    @fuse_errors
    @counts_as_change
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.listings.forget(parent_inode)
        await (await self._session(ctx)).rmdir(parent_inode, name)

    @fuse_errors
    @counts_as_change
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        session = await self._session(ctx)
        self.listings.forget(parent_inode)
        attr = await session.symlink(parent_inode, name, target)
        return self._entry(attr)

    @fuse_errors
    @counts_as_change
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        session = await self._session(ctx)
        self.listings.forget(parent_inode_old)
        self.listings.forget(parent_inode_new)
        await session.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @fuse_errors
    @counts_as_change
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        session = await self._session(ctx)
        self.listings.forget(new_parent_inode)
        attr = await session.link(inode, new_parent_inode, new_name)
        return self._entry(attr)

    # ------------------------------------------------------------------ files
    def _file_info(self, session: Session, f: OpenFile, flags: int) -> pyfuse3.FileInfo:
        fh = next(self._fh)
        self._files[fh] = Handle(session, f, flags)
        # O_APPEND writes land where the MRC says, not where the kernel's page cache
        # thinks the end is: such handles bypass the page cache
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=bool(flags & os.O_APPEND))

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        session = await self._session(ctx)
        f = await session.open(inode, flags)
        # Close-to-open: the kernel must not serve this open from attributes (the size
        # above all) cached before another client's close. Attributes only: takes no lock.
        with contextlib.suppress(OSError):
            pyfuse3.invalidate_inode(inode, attr_only=True)
        return self._file_info(session, f, flags)

    @fuse_errors
    @counts_as_change
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        session = await self._session(ctx)
        absent = self.listings.absent(parent_inode, name, time.monotonic()) > 0
        try:
            f = await session.create(parent_inode, name, mode, flags, ctx.umask, absent=absent)
        except BaseException:
            self.listings.forget(parent_inode)
            raise
        parent = session.dirs.dir_attr(parent_inode)
        if f.landing is not None and parent is not None:  # queued under the lease
            self.listings.added(parent_inode, name, f.ino, time.monotonic())
            self._fresh_dir(parent)
        else:
            self._changed_here(
                session,
                parent_inode,
                f.layout.parent,
                f.layout.parent_was,
                added=name,
                added_ino=f.ino,
            )
        self._note_no_caps(f.ino)  # a new file has none: the kernel asks before each write
        return self._file_info(session, f, flags), self._entry(f.layout.attr)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        data = await self._files[fh].file.read(off, size)
        metrics.data("read", len(data))
        return data

    @fuse_errors
    @counts_as_change
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        metrics.data("write", len(buf))
        handle = self._files[fh]
        if handle.flags & os.O_APPEND:
            if not handle.privs_checked:
                await self._kill_privs(handle)
            # atomic, also against other clients: where the MRC or our append lease says
            return await handle.session.appends.write(handle.file, buf)
        return await handle.file.write(off, buf)

    async def _kill_privs(self, handle: Handle) -> None:
        """Clear set-user-ID (and set-group-ID with group-execute) before the first write
        through a ``direct_io`` handle, as Linux does for a writer without CAP_FSETID
        (anyone but the super user): through the page cache the kernel does it, through
        ``direct_io`` it leaves it to the file system. The mode is the file's as opened."""
        handle.privs_checked = True
        if handle.session.identity.is_super:
            return
        mode = handle.file.layout.attr.mode
        kill = stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0)
        if mode & kill:
            await handle.session.setattr(handle.ino, mode=mode & 0o7777 & ~kill)
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_inode(handle.ino, attr_only=True)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        handle = self._files[fh]
        with self._changing(handle):
            await handle.file.flush()
        self._learn_allocation(handle.file)
        owner, handle.closing_owner = handle.closing_owner, None
        if owner is not None and owner in self._locked.get(handle.ino, ()):
            # a process closing any descriptor of a file loses its POSIX locks on it
            self._locked[handle.ino].discard(owner)
            await handle.session.release_locks(handle.ino, owner, locks.POSIX)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._files[fh]
        with self._changing(handle):
            if handle.flags & os.O_ACCMODE == os.O_RDONLY:
                # allowed on any descriptor; its XCap may not write (or sync) on the OSDs,
                # and what this mount wrote through others is synced by flush (or at close)
                await handle.file.flush(sync_mrc=True)
            else:
                # the data on every replica's disk, the size and the MRC's journal on its
                await handle.file.fsync()
        self._learn_allocation(handle.file)

    @fuse_errors
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh)
        try:
            # locks tied to this open file description (flock, OFD) end with it
            for owner in handle.lock_owners:
                if owner in self._locked.get(handle.ino, ()):
                    self._locked[handle.ino].discard(owner)
                    await handle.session.release_locks(handle.ino, owner, locks.POSIX)
                await handle.session.release_locks(handle.ino, owner, locks.FLOCK)
        finally:
            if not self._locked.get(handle.ino, True):
                del self._locked[handle.ino]
            with self._changing(handle):
                await handle.session.release(handle.file)

    @contextlib.contextmanager
    def _changing(self, handle: Handle) -> Iterator[None]:
        """Counts as a change (``changes``) if the file may report a size or times now:
        open for writing, or written through another descriptor."""
        if handle.flags & os.O_ACCMODE == os.O_RDONLY and not handle.file.size_dirty:
            yield
            return
        self.changes += 1
        try:
            yield
        finally:
            self.changes += 1

    # ------------------------------------------------------------------ locks
    # Served through xfs.client.fuse_ext (pyfuse3 has no lock operations). Locks live on
    # the MRC, per client lease and kernel lock owner, so every mount sees them.
    def lock_owner_closing(
        self, fh: int, owner: int, flock_release: bool, is_release: bool
    ) -> None:
        handle = self._files.get(fh)
        if handle is not None and not is_release:
            handle.closing_owner = owner  # flush() drops this owner's POSIX locks

    @fuse_errors
    async def getlk(self, ino: int, fh: int, owner: int, lock: fuse_ext.Lock) -> fuse_ext.Lock:
        handle = self._files[fh]
        holder = await handle.session.test_lock(
            ino, owner, locks.POSIX, _LOCK_MODE[lock.type], lock.start, lock.end, lock.pid
        )
        if holder is None:
            return fuse_ext.Lock(fcntl.F_UNLCK, lock.start, lock.end, 0)
        return fuse_ext.Lock(_LOCK_TYPE[holder.mode], holder.start, holder.end, holder.pid)

    @fuse_errors
    async def setlk(self, ino: int, fh: int, owner: int, lock: fuse_ext.Lock, sleep: bool) -> None:
        handle = self._files[fh]
        mode = _LOCK_MODE[lock.type]
        # noted before asking: a wait that is interrupted may still be granted, and the
        # close or exit of the process must then release it
        handle.lock_owners.add(owner)
        if mode != locks.UNLOCK:
            self._locked.setdefault(ino, set()).add(owner)
        holder = await handle.session.lock(
            ino, owner, locks.POSIX, mode, lock.start, lock.end, lock.pid, wait=sleep
        )
        if holder is not None:
            raise pyfuse3.FUSEError(errno.EAGAIN)

    @fuse_errors
    async def flock(self, ino: int, fh: int, owner: int, op: int) -> None:
        handle = self._files[fh]
        if op & fcntl.LOCK_UN:
            mode = locks.UNLOCK
        else:
            mode = locks.WRITE if op & fcntl.LOCK_EX else locks.READ
        handle.lock_owners.add(owner)  # (before asking: see setlk)
        holder = await handle.session.lock(
            ino, owner, locks.FLOCK, mode, 0, locks.EOF, 0, wait=not op & fcntl.LOCK_NB
        )
        if holder is not None:
            raise pyfuse3.FUSEError(errno.EWOULDBLOCK)

    @fuse_errors
    @counts_as_change
    async def fallocate(self, ino: int, fh: int, mode: int, offset: int, length: int) -> None:
        """Mode 0 (reserve: the file grows, sparse), KEEP_SIZE, and PUNCH_HOLE or
        ZERO_RANGE (the range reads as zeros afterwards)."""
        if mode & ~(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE) or (
            mode & FALLOC_PUNCH_HOLE and not mode & FALLOC_KEEP_SIZE
        ):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        if offset < 0 or length <= 0:
            raise pyfuse3.FUSEError(errno.EINVAL)
        handle = self._files[fh]
        size = (await handle.session.getattr(ino)).size
        end = offset + length
        if mode & (FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE):
            stop = min(end, size) if mode & FALLOC_KEEP_SIZE else end
            for pos in range(offset, stop, ZERO_CHUNK):
                await handle.file.write(pos, bytes(min(ZERO_CHUNK, stop - pos)))
        if not mode & FALLOC_KEEP_SIZE and end > size:
            await handle.session.setattr(ino, size=end)

    # ------------------------------------------------------------------ directories
    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        session = await self._session(ctx)
        attr = await session.getattr(inode)
        if not attr.mode & 0o040000:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._fh)
        self._dirs[fh] = (session, inode)
        return fh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        session, ino = self._dirs[fh]
        cursor = start_id
        while True:
            entries = await session.readdir(ino, cursor, 256)
            if not entries:
                return
            for entry in entries:
                attributes = self._attributes(entry.attr)
                if not pyfuse3.readdir_reply(token, entry.name, attributes, entry.cursor):
                    return
                self.inodes.looked_up(entry.attr.ino)
                cursor = entry.cursor

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @fuse_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # every reply came after its commit (a crash of the MRC process loses nothing);
        # this makes them durable against a crash of its machine (group commit)
        session, _ = self._dirs[fh]
        await session.sync()

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = await (await self._session(ctx)).statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = s.block_size
        out.f_blocks = s.blocks
        out.f_bfree = out.f_bavail = s.blocks_free
        out.f_files = s.files
        out.f_ffree = out.f_favail = s.files_free
        out.f_namemax = s.name_max
        return out

    # ------------------------------------------------------------------ xattrs
    # POSIX ACLs (system.posix_acl_*, and xfs's text form system.xfs.acl*) are
    # translated between local ids and grid names by xfs.client.acl_xattr.
    def _acl_changed(self, inode: int) -> None:
        """An ACL was set or removed: the mode may have changed, and the kernel's cached
        ACL and attributes are dropped."""
        with contextlib.suppress(OSError):
            pyfuse3.invalidate_inode(inode, attr_only=True)

    @fuse_errors
    @counts_as_change
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        session = await self._session(ctx)
        if name == CAPS:
            self._no_caps.pop(inode, None)
        if name not in acl_xattr.NAMES:
            if name.startswith(b"xfs."):
                # a policy or replica change is refused while the file is open for
                # writing: closes of ours still waiting to be sent must not count
                for each in self.sessions.all():
                    await each.send_closes()
            await session.setxattr(inode, name, value)
            if name == CAPS:
                self._no_caps.pop(inode, None)  # (a getxattr may have crossed the set)
            return
        try:
            await acl_xattr.setxattr(session, self.idmap, inode, name, value)
        finally:
            self._acl_changed(inode)

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if name == CAPS and self._no_caps.get(inode, 0.0) > time.monotonic():
            raise pyfuse3.FUSEError(errno.ENODATA)
        session = await self._session(ctx)
        if name in acl_xattr.NAMES:
            return await acl_xattr.getxattr(session, self.idmap, inode, name)
        if name == digests.NAME:  # answered by the mount: it asks every replica's OSDs
            return await digests.replica_digests(session, inode)
        try:
            return await session.getxattr(inode, name)
        except XfsError as e:
            if name == CAPS and e.code == errno.ENODATA:
                self._note_no_caps(inode)
            raise

    def _note_no_caps(self, inode: int) -> None:
        """``inode`` has no file capabilities, for the attribute timeout."""
        if len(self._no_caps) >= 100_000:
            self._no_caps.clear()
        self._no_caps[inode] = time.monotonic() + self._attr_timeout

    @fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return await (await self._session(ctx)).listxattr(inode)

    @fuse_errors
    @counts_as_change
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        session = await self._session(ctx)
        if name == CAPS:
            self._no_caps.pop(inode, None)
        if name not in acl_xattr.NAMES:
            await session.removexattr(inode, name)
            return
        try:
            await acl_xattr.removexattr(session, inode, name)
        finally:
            self._acl_changed(inode)


__all__ = ["ROOT_INO", "Operations"]
