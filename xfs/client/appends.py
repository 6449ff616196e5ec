"""O_APPEND writes, and the append leases that let a client append without asking.

Without a lease, every O_APPEND write first asks the MRC where it goes (``mrc.append``
reserves the bytes at the end of the file), so appenders on any client get disjoint
ranges. That is a round trip per write. A client that is the only one with the file
open for writing takes the file's *append lease* with that first call; from then on it
appends at its own idea of the end (the open file's size, which counts its unreported
writes) until it closes the file or the MRC recalls the lease, because another client
opens the file for writing, appends to it or truncates it. On a recall this client
reports what it wrote (data, then size) and gives the lease back; the other client's
call goes on after that. The rules, and why nothing is written twice at one offset, are
in docs/design/leases.md, "Append leases".

A lease is used only while this client hears from the MRC: every ``mrc.lease_recalls``
poll that answers renews the trust for ``LEASE_TRUST`` seconds from when it was sent,
which ends before the MRC takes back a lease that was not given back (``RECALL_WAIT``).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from xfs.proto.errors import XfsError
from xfs.proto.methods import MRC, Append, ClientId, LeaseReturn
from xfs.proto.records import Kind

if TYPE_CHECKING:
    from xfs.client.file_io import OpenFile
    from xfs.client.session import Session

log = logging.getLogger(__name__)

# Seconds a lease is used after the last answered recall poll was sent: below the MRC's
# RECALL_WAIT (20 s), after which it ends a lease that was not given back.
LEASE_TRUST = 10.0
POLL_RETRY = 1.0  # seconds between recall polls while the MRC does not answer


class Appender:
    """One session's O_APPEND writes and the append leases it holds."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._held: set[int] = set()  # inodes whose append lease this session holds
        self._locks: dict[int, trio.Lock] = {}  # orders appends and give-backs per inode
        self._heard = -math.inf  # trio time the last answered recall poll was sent
        self._polling = False

    async def write(self, f: OpenFile, data: bytes) -> int:
        """One O_APPEND write of ``data`` to ``f``, whole, at the end of the file."""
        lock = self._lock(f.ino)
        try:
            lock.acquire_nowait()  # as a rule free: then no trip through the scheduler
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if f.ino in self._held:
                if self.trusted():
                    return await f.write(f.size, data)
                # not heard from the MRC lately: report, give back, ask as without one
                await self._give_back(f.ino)
            s = self._session
            sent = trio.current_time()
            request = Append(s.volume, f.ino, await s.client(), len(data), lease=True)
            reply = await s.mrc(MRC.append, request)
            if reply.leased:
                self._held.add(f.ino)
                self.heard_at(sent)  # nothing was recalled when it answered
                self.start_polling()
            return await f.write(reply.offset, data)
        finally:
            lock.release()

    async def give_back(self, ino: int) -> None:
        """Report this session's appends to ``ino`` and return its lease, if held (before
        a change of the size by this session: the MRC would recall it from us)."""
        if ino in self._held:
            async with self._lock(ino):
                await self._give_back(ino)

    def closed(self, ino: int) -> None:
        """The MRC got the close of the session's last handle of ``ino`` (sent up to
        CLOSE_DELAY after it): the lease ended with the registration. Until then a
        reopen keeps both, and a recall is still answered."""
        self._held.discard(ino)
        lock = self._locks.get(ino)
        if lock is not None and not lock.locked():
            del self._locks[ino]

    def lost(self) -> None:
        """The client lease ended on the MRC, and with it every append lease."""
        if self._held:
            log.error(
                "append leases of %d file(s) ended with the client lease: appends not "
                "reported yet may overlap other clients' appends",
                len(self._held),
            )
        self._held.clear()

    def _lock(self, ino: int) -> trio.Lock:
        lock = self._locks.get(ino)
        if lock is None:
            lock = self._locks[ino] = trio.Lock()
        return lock

    async def _give_back(self, ino: int) -> None:
        s = self._session
        self._held.discard(ino)
        f = s.files.get(ino)
        if f is not None:
            await f.flush()  # data, then the size: the next appender starts after it
        client = s.client_id
        if client is not None:
            await s.mrc(MRC.lease_return, LeaseReturn(s.volume, ino, client))

    def trusted(self) -> bool:
        """Whether leases may be used: the MRC answered a recall poll lately."""
        return trio.current_time() - self._heard < LEASE_TRUST

    def heard_at(self, sent: float) -> None:
        """A grant sent at ``sent`` (trio time) answered: nothing was recalled then."""
        self._heard = max(self._heard, sent)

    def start_polling(self) -> None:
        if not self._polling:
            self._polling = True
            self._session.nursery.start_soon(self._poll)

    async def _poll(self) -> None:
        """Ask the MRC for recalls while this session holds a lease (append leases and
        the directory leases of ``DirLeases``)."""
        s = self._session
        try:
            while (self._held or s.dirs.holding) and s.client_id is not None:
                sent = trio.current_time()
                try:
                    with trio.fail_after(s.io_timeout):
                        reply = await s.pool.call(
                            s.mrc_address,
                            MRC.lease_recalls,
                            ClientId(s.client_id),
                            expect=Kind.MRC,
                        )
                except (XfsError, trio.TooSlowError) as e:
                    log.warning("asking the MRC for append lease recalls failed: %s", e)
                    await trio.sleep(POLL_RETRY)
                    continue
                self._heard = sent
                for item in reply.files:
                    if item.volume == s.volume:
                        s.nursery.start_soon(self._recalled, item.ino)
                for item in reply.dirs:
                    if item.volume == s.volume:
                        s.nursery.start_soon(s.dirs.recalled, item.ino)
        finally:
            self._polling = False

    async def _recalled(self, ino: int) -> None:
        try:
            async with self._lock(ino):
                await self._give_back(ino)
            lock = self._locks.get(ino)
            if ino not in self._session.files and lock is not None and not lock.locked():
                del self._locks[ino]
        except (XfsError, trio.TooSlowError) as e:
            # the MRC ends the lease after RECALL_WAIT; we stopped using it already
            log.error("giving back the append lease of inode %d failed: %s", ino, e)
