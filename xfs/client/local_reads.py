"""Local reads: object ranges read straight from the files of an OSD on this host.

A small read elsewhere than after the last one (a random read) fetches only its range
of an object; over TLS from an OSD of this very host that is a round trip of two Python
processes for 4 KiB, and a sequential reader's whole object crosses TLS twice
(encrypted by the OSD, decrypted by the mount). When the OSD grants it
(``xfs.common.local``), the mount instead holds a descriptor of the directory of the
file's objects there and reads the object file itself: header, block table and the
blocks it needs, checked against their CRC32Cs (``object_format.read_range``). A
sequential reader's whole objects are read the same way, in worker threads. Objects
are replaced whole by a rename, so a file opened this way is one version of the object,
never a torn one.

A grant is tied to the XCap and XLocSet it was made for: a new XCap (a new open, a
renewal) or a new replica set asks again, and an expired XCap is not used. Anything
unusual (no such OSD here, a refusal, a missing object, a checksum that does not match)
makes the read go over TLS as before, where the OSD repairs what needs repair. See
docs/design/local-reads.md.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from xfs.common import local, object_io
from xfs.proto.methods import LocalOpen, LocalOpened
from xfs.proto.records import FileLayout, XCap

log = logging.getLogger(__name__)

MAX_GRANTS = 64  # directory descriptors one session keeps (least recently used go)
NOT_LOCAL_FOR = 60.0  # seconds an OSD that is not on this host (or failed) is not asked
WHOLE_READERS = 4  # worker threads reading whole objects at once (a sequential reader's
# object and the ones read ahead)


@dataclass
class _Grant:
    xcap: XCap
    version: int  # of the XLocSet
    fd: int | None  # None: refused for this XCap


class LocalReads:
    """One session's descriptors of object directories on the OSDs of this host."""

    def __init__(self, clock: Callable[[], float], timeout: float) -> None:
        self._clock = clock  # wall clock, as XCap expiry
        self._timeout = min(timeout, 2.0)
        self._grants: OrderedDict[tuple[str, str], _Grant] = OrderedDict()  # (file, osd)
        self._not_local: dict[str, float] = {}  # osd -> trio time it may be asked again
        self._whole_readers = trio.CapacityLimiter(WHOLE_READERS)

    async def read(
        self, layout: FileLayout, osd: str, objno: int, offset: int, length: int
    ) -> bytes | None:
        """Bytes [offset, offset+length) of the object, short past its end; None if
        they must be read through the OSD. A small read, done inline."""
        fd = await self._granted(layout, osd)
        return None if fd is None else _read(fd, objno, offset, length, os.POSIX_FADV_RANDOM)

    async def read_object(
        self, layout: FileLayout, osd: str, objno: int, length: int
    ) -> bytes | None:
        """All of the object (``length``, the stripe size, at most); None if it must
        be read through the OSD. A sequential reader's whole object, read in a worker
        thread (a cold MiB takes a disk access the mount's other requests must not wait
        for), on a duplicate of the directory descriptor, which a new grant may close
        meanwhile."""
        fd = await self._granted(layout, osd)
        if fd is None:
            return None
        own = os.dup(fd)
        try:
            read = functools.partial(_read, own, objno, 0, length, os.POSIX_FADV_SEQUENTIAL)
            return await trio.to_thread.run_sync(read, limiter=self._whole_readers)
        finally:
            os.close(own)

    async def _granted(self, layout: FileLayout, osd: str) -> int | None:
        """The descriptor of the file's object directory on ``osd``; None if there is
        no grant (not on this host, refused, the XCap expired)."""
        xcap = layout.xcap
        if self._not_local.get(osd, 0.0) > trio.current_time() or self._clock() >= xcap.expires:
            return None
        key = (xcap.file_id, osd)
        grant = self._grants.get(key)
        if grant is None or grant.xcap != xcap or grant.version != layout.xloc.version:
            if grant is not None:
                self._drop(key)
            grant = _Grant(xcap, layout.xloc.version, await self._ask(layout, osd))
            if key in self._grants:  # another read asked meanwhile
                self._drop(key)
            self._grants[key] = grant
            while len(self._grants) > MAX_GRANTS:
                self._drop(next(iter(self._grants)))
        self._grants.move_to_end(key)
        return grant.fd

    def close(self) -> None:
        for key in list(self._grants):
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        grant = self._grants.pop(key)
        if grant.fd is not None:
            os.close(grant.fd)

    async def _ask(self, layout: FileLayout, osd: str) -> int | None:
        """A directory descriptor from the OSD's local socket; None if not granted."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            try:
                with trio.fail_after(self._timeout):
                    await sock.connect(local.socket_name(osd))
                    uid = local.peer_uid(sock)
                    if not local.trusted(uid):
                        log.error(
                            "the local socket of OSD %s is served by uid %d: ignored", osd, uid
                        )
                        self._not_local[osd] = trio.current_time() + NOT_LOCAL_FOR
                        return None
                    await local.send(sock, LocalOpen(layout.xcap, layout.xloc))
                    message = await local.receive(sock, LocalOpened)
            except (OSError, ValueError, trio.TooSlowError) as e:
                # not on this host (ECONNREFUSED), gone, stopped: TLS for a while
                if not isinstance(e, ConnectionRefusedError):
                    log.info("local reads from OSD %s off for %.0f s: %s", osd, NOT_LOCAL_FOR, e)
                self._not_local[osd] = trio.current_time() + NOT_LOCAL_FOR
                return None
        if message is None:
            return None
        reply, fds = message
        if reply.code != 0 or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            log.debug("OSD %s: no local reads of %s: %s", osd, layout.xcap.file_id, reply.message)
            return None
        return fds[0]


def _read(dir_fd: int, objno: int, offset: int, length: int, advice: int) -> bytes | None:
    try:
        fd = os.open(str(objno), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:  # not held here (a hole), or the file went: the OSD knows
        return None
    try:
        os.posix_fadvise(fd, 0, 0, advice)  # (random: a cold read reads no more)
        with contextlib.suppress(ValueError):
            return object_io.read_range(fd, offset, length)
        log.info("object %d failed its checksums here: read through the OSD, which repairs", objno)
        return None
    except OSError:
        return None
    finally:
        os.close(fd)
