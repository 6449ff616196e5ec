"""Creates under directory leases: a new file without waiting for the MRC.

A session that made a directory asks for its lease (``mrc.dir_lease``). While it holds
it, no other client reads or changes the directory's entries without recalling the
lease first, and the mount knows every name in it (``Listings``). A create of a name it
knows to be absent then needs no answer from the MRC: the session gives the file an
inode number from a range reserved for it (``mrc.reserve_inos``), makes up its
attributes as the MRC will (the lease's owner and group, the mode less the umask), and
queues the create. A sender sends the queue in batches (``mrc.create_many``), one batch
at a time, so a storm of creates costs one MRC call per batch instead of one per file.

Ordering: any other MRC call of this session that names a queued file (by inode) or a
directory with queued creates waits until they have landed (``before``); ``fsync`` of a
file or a directory and ``mrc.sync`` wait for all. I/O on a queued file waits for its
layout (``landing``). A recall (the holder's ``lease_recalls`` poll) stops new creates
under the lease, waits for the queued ones to land and returns the lease.

What a reply promises is in docs/design/leases.md, "Directory leases": a create is
acknowledged to the application before the MRC has it; the batch goes out at once, is
sent again after a lost reply or an MRC restart (the inode number makes it idempotent)
until it lands, and a recall, an fsync or a close-to-open reader on another client waits
for it. If the MRC refuses one afterwards (the lease ended while this mount was cut off
and the name was taken meanwhile), the error is logged and the open file reports it.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import math
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from xfs.common.rpc import unreachable
from xfs.proto.errors import XfsError
from xfs.proto.methods import (
    MRC,
    CreateMany,
    DirLeaseAsk,
    Gone,
    InoAsk,
    LeaseReturn,
    Lookup,
    Made,
    MadeMany,
    Method,
    NewFile,
    ReadDir,
    UnlinkMany,
)
from xfs.proto.records import (
    Attr,
    FileLayout,
    Kind,
    Replica,
    StripingPolicy,
    UpdatePolicy,
    XCap,
    XLocSet,
)

if TYPE_CHECKING:
    from xfs.client.session import Session

log = logging.getLogger(__name__)

RESERVE = 1024  # inode numbers reserved at a time
LOW_WATER = 256  # reserve more when fewer are left
MAX_BATCH = 512  # creates in one create_many
MAX_QUEUED = 4096  # changes not landed yet; beyond, they wait for the MRC as without
ASK_AFTER = 8  # changes through the MRC in one directory before its lease is asked for
ASK_AGAIN = 60.0  # seconds before a directory's lease is asked for again
READ_PAGE = 4096  # entries per readdir when a lease's names are read
MAX_NAMES = 100_000  # a directory with more is not leased (memory)
RETRY = 0.5  # seconds between sendings of a batch the MRC did not answer
# whole-call answers that sending again cannot change: the client lease is not (or no
# longer) the caller's, or the request is malformed
REFUSALS = {errno.EPERM, errno.EACCES, errno.ESTALE, errno.EINVAL, errno.ENOSYS}
_OWN = (
    MRC.create_many,
    MRC.unlink_many,
    MRC.dir_lease,
    MRC.dir_lease_return,
    MRC.reserve_inos,
)
_READS = (MRC.getattr, MRC.getxattr, MRC.listxattr, MRC.access, MRC.readlink)


@dataclass
class _Dir:
    """A directory whose lease this session holds."""

    attr: Attr  # its attributes as this session's changes leave them
    owner: str  # of the files this session creates in it
    group: str
    blksize: int
    last: _Op | None = None  # the last change queued under the lease (they land in order)
    returning: bool = False  # recalled: no new changes under the lease


@dataclass
class _Op:
    parent: int
    name: bytes
    ino: int
    landed: trio.Event = field(default_factory=trio.Event)
    error: XfsError | None = None


@dataclass
class _Create(_Op):
    file: NewFile | None = None
    layout: FileLayout | None = None

    async def result(self) -> FileLayout | None:
        """The layout the MRC gave the file when it landed (None: it had no OSD to
        place it on then; the first open places it)."""
        await self.landed.wait()
        if self.error is not None:
            raise self.error
        return self.layout


@dataclass
class _Unlink(_Op):
    pass


def _creates(volume: str, files: list[NewFile], client: str) -> CreateMany:
    return CreateMany(volume, client, files)


def _unlinks(volume: str, gone: list[Gone], client: str) -> UnlinkMany:
    return UnlinkMany(volume, client, gone)


def placeholder(attr: Attr) -> FileLayout:
    """The layout of a queued file until its create lands: no OSD, an XCap that has
    expired (so ``OpenFile.fresh_layout`` waits for the real one)."""
    striping = StripingPolicy(attr.blksize, 1)
    xloc = XLocSet(0, [Replica([], striping)], UpdatePolicy.NONE)
    return FileLayout(attr, xloc, XCap("", attr.ino, 0, 0, 0, b"", 0, 0, b"", ""), {})


# Every session's queued changes by (MRC, volume, inode): the sessions of one mount share
# the kernel's inodes, so another session's call on a queued file waits for it too.
_EVERYWHERE: dict[tuple[str, str, int], _Op] = {}


# Adopt a granted lease: given the directory's change number at the grant and, for a
# directory the session did not make, every name in it with its inode, the mount's
# listing takes it over; False: the listing is not whole, give the lease back.
Adopt = Callable[[int, "dict[bytes, int] | None"], bool]


class DirLeases:
    """One session's directory leases, reserved inode numbers and queued changes."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self.held: dict[int, _Dir] = {}
        self._ranges: list[list[int]] = []  # [next, last] of reserved inode numbers
        self._reserving = False
        self._queue: list[_Op] = []
        self._queued: dict[int, _Op] = {}  # ino -> its change not landed yet
        self._names: dict[tuple[int, bytes], _Op] = {}
        self._loading: dict[int, trio.Event] = {}  # directories whose names are read
        self._changes: dict[int, int] = {}  # changes through the MRC, per directory
        self._asked: dict[int, float] = {}  # when a lease was last asked for (trio time)
        self._last: _Op | None = None  # the last change queued (they land in order)
        self._sending = False
        # per directory asked for, told of its recall: another client is about to change
        # it, so what the mount knows of its names (xfs/client/listings.py) is not whole
        self._on_recall: dict[int, Callable[[int], None]] = {}

    # ------------------------------------------------------------------ leases
    def wanted(self, ino: int) -> bool:
        """Whether to ask for the lease of ``ino``, in which this session just changed an
        entry through the MRC: after ``ASK_AFTER`` such changes, and not again within
        ``ASK_AGAIN`` seconds (a directory recalled from us is shared)."""
        if ino in self.held or ino in self._loading:
            return False
        n = self._changes.get(ino, 0) + 1
        if len(self._changes) >= 1024:
            self._changes.clear()
        self._changes[ino] = n
        if n < ASK_AFTER:
            return False
        if trio.current_time() - self._asked.get(ino, -math.inf) < ASK_AGAIN:
            return False
        if len(self._asked) >= 1024:
            self._asked.clear()
        self._asked[ino] = trio.current_time()
        self._changes.pop(ino, None)
        return True

    def ask(
        self,
        attr: Attr,
        adopt: Adopt,
        *,
        made: bool,
        on_recall: Callable[[int], None] = lambda ino: None,
    ) -> None:
        """Ask for the lease of directory ``attr``, in the background; ``made``: this
        session just made it (empty), else its names are read once the lease is held and
        given to ``adopt``. Until then the session's calls on the directory wait
        (``before``), so each carries the client lease the grant is for. ``on_recall``
        is told when the lease is recalled (another client will change the directory)."""
        if attr.ino not in self._loading and attr.ino not in self.held:
            if len(self._on_recall) >= 4096:
                self._on_recall.clear()  # (a forgotten hook: the listing stays its window)
            self._on_recall[attr.ino] = on_recall
            loading = self._loading[attr.ino] = trio.Event()
            self._s.nursery.start_soon(self._ask, attr, adopt, made, loading)

    async def _ask(self, attr: Attr, adopt: Adopt, made: bool, loading: trio.Event) -> None:
        s = self._s
        ino = attr.ino
        try:
            client = await s.client()
            sent = trio.current_time()
            lease = await s.mrc(MRC.dir_lease, DirLeaseAsk(s.volume, ino, client))
            if not lease.granted:
                return
            s.appends.heard_at(sent)  # nothing was recalled when the grant answered
            s.appends.start_polling()  # (a recall while the names are read is answered)
            names = None if made else await self._names_of(ino, client)
            if self._loading.get(ino) is not loading or not adopt(lease.seq, names):
                if self._loading.get(ino) is loading:  # (else recalled meanwhile)
                    await s.mrc(MRC.dir_lease_return, LeaseReturn(s.volume, ino, client))
                return
            self.held[ino] = _Dir(attr, lease.owner, lease.group, lease.blksize)
            if self._left() < LOW_WATER and not self._reserving:
                self._reserving = True
                s.nursery.start_soon(self._reserve_quietly)
        except (XfsError, trio.TooSlowError) as e:
            log.info("no lease on directory %d: %s", ino, e)
        finally:
            if self._loading.get(ino) is loading:
                del self._loading[ino]
            loading.set()

    async def _names_of(self, ino: int, client: str) -> dict[bytes, int] | None:
        """Every name in directory ``ino`` with its inode (None: more than MAX_NAMES),
        read under the lease: nobody else changes it meanwhile, and this session waits."""
        s = self._s
        names: dict[bytes, int] = {}
        cursor = 0
        while True:
            with trio.fail_after(s.io_timeout):
                request = ReadDir(s.volume, ino, cursor, READ_PAGE, client)
                reply = await s.pool.call(s.mrc_address, MRC.readdir, request, expect=Kind.MRC)
            for e in reply.entries:
                names[e.name] = e.attr.ino
            if len(names) > MAX_NAMES:
                return None
            if len(reply.entries) < READ_PAGE:
                return names
            cursor = reply.entries[-1].cursor

    async def recalled(self, ino: int) -> None:
        """The MRC wants the lease back: no new changes, the queued ones landed, return."""
        s = self._s
        self._on_recall.pop(ino, lambda ino: None)(ino)
        self._loading.pop(ino, None)  # (a lease being adopted is not adopted)
        d = self.held.get(ino)
        if d is not None:
            d.returning = True
            if d.last is not None:
                await d.last.landed.wait()
            if self.held.get(ino) is d:
                del self.held[ino]
        self._asked[ino] = trio.current_time()
        client = s.client_id
        if client is not None:
            try:
                await s.mrc(MRC.dir_lease_return, LeaseReturn(s.volume, ino, client))
            except (XfsError, trio.TooSlowError) as e:
                # the MRC ends it after RECALL_WAIT; we stopped using it already
                log.error("giving back the lease of directory %d failed: %s", ino, e)

    def lost(self) -> None:
        """The client lease ended on the MRC: the directory leases and ranges with it."""
        self.held.clear()
        self._ranges.clear()

    def _usable(self, parent: int) -> _Dir | None:
        d = self.held.get(parent)
        if (
            d is None
            or d.returning
            or self._s.client_id is None
            or not self._s.appends.trusted()
            or len(self._queued) >= MAX_QUEUED
        ):
            return None
        return d

    # ------------------------------------------------------------------ changes
    def create(self, parent: int, name: bytes, mode: int, flags: int, umask: int) -> Attr | None:
        """Queue the create of ``name``, known absent, in ``parent``: the new file's
        attributes, or None when it must go to the MRC as usual."""
        d = self._usable(parent)
        if (
            d is None
            or stat.S_IFMT(mode) not in (0, stat.S_IFREG)
            or mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
        ):
            return None
        ino = self._take()
        if ino is None:
            return None
        now = time.time_ns()
        bits = mode & ~umask & 0o777
        attr = Attr(ino, stat.S_IFREG | bits, 1, d.owner, d.group, 0, now, now, now, 0, d.blksize)
        f = NewFile(parent, name, ino, mode & 0o777, flags, umask, now)
        self._queue_op(d, _Create(parent, name, ino, file=f))
        return attr

    def unlink(self, parent: int, name: bytes, ino: int) -> bool:
        """Queue the unlink of ``name`` in ``parent``, known to lead to file ``ino``;
        False when it must go to the MRC as usual."""
        d = self._usable(parent)
        if d is None or ino in self._queued:
            return False
        self._queue_op(d, _Unlink(parent, name, ino))
        return True

    def _queue_op(self, d: _Dir, op: _Op) -> None:
        now = time.time_ns()
        d.attr = dataclasses.replace(d.attr, mtime_ns=now, ctime_ns=now, seq=0)
        self._queue.append(op)
        self._queued[op.ino] = op
        _EVERYWHERE[(self._s.mrc_address, self._s.volume, op.ino)] = op
        self._names[(op.parent, op.name)] = op
        d.last = self._last = op
        if not self._sending:
            self._sending = True
            self._s.nursery.start_soon(self._send)

    def dir_attr(self, ino: int) -> Attr | None:
        """A leased directory's attributes as this session's changes left them."""
        d = self.held.get(ino)
        return None if d is None else d.attr

    def landing(self, ino: int) -> Callable[[], Awaitable[FileLayout | None]] | None:
        op = self._queued.get(ino)
        return op.result if isinstance(op, _Create) else None

    @property
    def holding(self) -> bool:
        """Whether the session holds (or is taking) a directory lease: recalls matter."""
        return bool(self.held or self._loading)

    @property
    def busy(self) -> bool:
        return bool(self._queued or self._loading or _EVERYWHERE)

    async def before(self, method: Method[Any, Any], request: Any) -> None:
        """Wait until the queued changes that ``request`` depends on have landed (and
        the names of a directory being adopted are read)."""
        if method in _OWN:
            return
        if method is MRC.sync or method is MRC.client_close:
            await self.drain()
            return
        if isinstance(request, Lookup):
            op = self._names.get((request.parent, request.name))
            if op is not None:
                await op.landed.wait()
            return
        if method in _READS:  # the MRC must know a queued file; a directory may lag
            op = self._anywhere(getattr(request, "ino", 0))
            if op is not None:
                await op.landed.wait()
            return
        for ino in (
            getattr(request, "ino", None),
            getattr(request, "parent", None),
            getattr(request, "new_parent", None),
            *getattr(request, "inos", ()),
        ):
            if ino is None:
                continue
            op = self._anywhere(ino)
            if op is not None:
                await op.landed.wait()
            loading = self._loading.get(ino)
            if loading is not None:
                await loading.wait()
            d = self.held.get(ino)
            if d is not None and d.last is not None:
                await d.last.landed.wait()  # (not the changes queued after this call)

    def _anywhere(self, ino: int) -> _Op | None:
        """The queued change of ``ino`` of this session or of another session of this
        mount (another local user's call on a file the kernel learnt of through ours)."""
        op = self._queued.get(ino)
        if op is None and _EVERYWHERE:
            op = _EVERYWHERE.get((self._s.mrc_address, self._s.volume, ino))
        return op

    async def drain(self) -> None:
        """Wait until every change queued so far has landed."""
        if self._last is not None:
            await self._last.landed.wait()

    async def _send(self) -> None:
        s = self._s
        batch: list[_Op] = []
        try:
            while self._queue:
                kind = type(self._queue[0])
                n = 1
                while n < min(len(self._queue), MAX_BATCH) and type(self._queue[n]) is kind:
                    n += 1
                batch, self._queue = self._queue[:n], self._queue[n:]
                if kind is _Create:
                    files = [op.file for op in batch if isinstance(op, _Create) and op.file]
                    made = await self._send_batch(
                        MRC.create_many,
                        functools.partial(_creates, s.volume, files),
                        len(batch),
                    )
                else:
                    gone = [Gone(op.parent, op.name, op.ino) for op in batch]
                    made = await self._send_batch(
                        MRC.unlink_many,
                        functools.partial(_unlinks, s.volume, gone),
                        len(batch),
                    )
                for op, m in zip(batch, made, strict=True):
                    self._landed(op, m)
        finally:
            self._sending = False
            # cancelled with the session (unmount): nobody may wait for these forever
            left = [op for op in batch + self._queue if not op.landed.is_set()]
            self._queue = []
            for op in left:
                self._landed(op, Made(error=errno.ESHUTDOWN, message="the session ended"))

    async def _send_batch(
        self,
        method: Method[Any, MadeMany],
        request: Callable[[str], Any],
        count: int,
    ) -> list[Made]:
        s = self._s
        while True:
            client = s.client_id
            if client is None:
                return [Made(error=errno.ESTALE, message="the session ended")] * count
            try:
                with trio.fail_after(s.io_timeout):
                    reply = await s.pool.call(
                        s.mrc_address, method, request(client), expect=Kind.MRC
                    )
                return reply.files
            except (XfsError, trio.TooSlowError) as e:
                if isinstance(e, XfsError) and not unreachable(e) and e.code in REFUSALS:
                    return [Made(error=e.code, message=str(e))] * count
                # the MRC or the way to it failed: the same changes again (each is
                # recognised if it landed already)
                log.warning("sending %d changes failed (%s), sending again", count, e)
            await trio.sleep(RETRY)

    def _landed(self, op: _Op, made: Made) -> None:
        if isinstance(op, _Create):
            op.layout = made.layout
        if made.error:
            op.error = XfsError(made.error, made.message)
            log.error(
                "the %s of %r in directory %d (inode %d), acknowledged already, was "
                "refused by the MRC: %s",
                "create" if isinstance(op, _Create) else "unlink",
                op.name,
                op.parent,
                op.ino,
                made.message,
            )
        op.landed.set()
        if self._queued.get(op.ino) is op:
            del self._queued[op.ino]
        key = (self._s.mrc_address, self._s.volume, op.ino)
        if _EVERYWHERE.get(key) is op:
            del _EVERYWHERE[key]
        if self._names.get((op.parent, op.name)) is op:
            del self._names[(op.parent, op.name)]

    # ------------------------------------------------------------------ inode numbers
    def _left(self) -> int:
        return sum(last - nxt + 1 for nxt, last in self._ranges)

    def _take(self) -> int | None:
        if self._left() < LOW_WATER and not self._reserving:
            self._reserving = True
            self._s.nursery.start_soon(self._reserve_quietly)
        while self._ranges:
            r = self._ranges[0]
            if r[0] <= r[1]:
                r[0] += 1
                return r[0] - 1
            self._ranges.pop(0)
        return None

    async def _reserve_quietly(self) -> None:
        try:
            await self._reserve()
        except (XfsError, trio.TooSlowError) as e:
            log.warning("reserving inode numbers failed: %s", e)
        finally:
            self._reserving = False

    async def _reserve(self) -> None:
        s = self._s
        client = await s.client()
        got = await s.mrc(MRC.reserve_inos, InoAsk(s.volume, client, RESERVE))
        if s.client_id == client:
            self._ranges.append([got.first, got.first + got.count - 1])
