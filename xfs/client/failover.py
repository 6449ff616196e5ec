"""Calls to the OSDs of one file, with failover (docs/design/replication.md).

Every OSD call of a file goes through :func:`call_osd`. It picks the OSD (the primary of
the object's column; for reads of sealed files every replica in turn, see
:func:`candidates`), bounds each attempt by ``osd_timeout`` and the whole operation by
``io_timeout``, and on a failure:

- ``EACCES``: the XCap was refused (another client truncated the file, or it expired):
  renewed once, then the refusal stands;
- ``ESTALE``: the XLocSet changed (a replica was dropped or added): renewed, tried again;
- a replica of a sealed file failed the read with ``EIO`` (a partial replica that could
  not reach a complete one): the next replica is tried;
- the OSD did not answer: for a sealed file the next replica is tried; otherwise the OSD
  is reported to the MRC (which replaces it once its lease has run out) and, after a
  pause, the call is tried again with the current XLocSet.

No loop is unbounded: past ``io_timeout`` the operation fails with ``EIO``.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import trio

from xfs.common.health import Health
from xfs.common.rpc import unreachable
from xfs.common.striping import osd_of
from xfs.proto.errors import XfsError
from xfs.proto.methods import MRC, ReplicaFailed
from xfs.proto.records import FileLayout, UpdatePolicy

if TYPE_CHECKING:
    from xfs.client.session import Session

log = logging.getLogger(__name__)

T = TypeVar("T")

PAUSE = 0.3  # seconds between rounds while waiting for the MRC to replace an OSD


class FixedSource:
    """A layout got outside an open file (truncate by path): renewed by opening again."""

    def __init__(self, session: Session, layout: FileLayout, flags: int) -> None:
        self._session = session
        self._layout = layout
        self._flags = flags

    async def layout(self) -> FileLayout:
        return self._layout

    async def renew(self, refused: FileLayout) -> FileLayout:
        self._layout = await self._session.reopen(refused.attr.ino, self._flags)
        return self._layout


class LayoutSource(Protocol):
    async def layout(self) -> FileLayout:
        """The layout to use now (renewed first if its XCap is about to expire)."""

    async def renew(self, refused: FileLayout) -> FileLayout:
        """A new layout from the MRC after ``refused`` was refused."""


def candidates(layout: FileLayout, objno: int, read: bool, health: Health) -> list[str]:
    """The OSDs to try for ``objno``, in order.

    Writes, and reads of writable files, go to the primary of the object's column. Reads
    of a sealed file are spread over its replicas, complete or partial: the replica list
    rotated by the object's stripe row, so a sequential read asks every replica and each
    partial replica fills with its share on first use; healthy OSDs come first.
    """
    xloc = layout.xloc
    if not (read and xloc.update_policy is UpdatePolicy.RONLY):
        return [osd_of(xloc.replicas[0], objno)]
    width = xloc.replicas[0].striping.width
    start = (objno // width) % len(xloc.replicas)
    rotated = [osd_of(r, objno) for r in xloc.replicas[start:] + xloc.replicas[:start]]
    return sorted(rotated, key=health.recently_failed)


async def call_osd(
    session: Session,
    source: LayoutSource,
    objno: int,
    call: Callable[[FileLayout, str], Awaitable[T]],
    *,
    read: bool = False,
) -> T:
    """``call(layout, osd)`` on the right OSD for ``objno``, with failover (see above)."""
    deadline = trio.current_time() + session.io_timeout
    renewed = False
    layout = await source.layout()
    while True:
        failure: BaseException | None = None
        tried = []
        for osd in candidates(layout, objno, read, session.health):
            tried.append(osd)
            attempt = max(0.1, min(session.osd_timeout, deadline - trio.current_time()))
            try:
                with trio.fail_after(attempt):
                    result = await call(layout, osd)
                session.health.ok(osd)
                return result
            except XfsError as e:
                if e.code == errno.EACCES and not renewed:
                    renewed, failure = True, e
                    layout = await source.renew(layout)
                    break
                if e.code == errno.ESTALE:
                    failure = e
                    layout = await source.renew(layout)
                    break
                if not (unreachable(e) or (read and e.code == errno.EIO and read_only(layout))):
                    raise
                failure = e
            except trio.TooSlowError as e:
                failure = e
            session.health.failed(osd)
        else:
            # every candidate failed to answer: the MRC may replace them
            if trio.current_time() >= deadline:
                raise XfsError(
                    errno.EIO,
                    f"no replica of inode {layout.attr.ino} answered within "
                    f"{session.io_timeout:g} s (last: {failure})",
                )
            if layout.xloc.replicated and not read_only(layout):
                await _report(session, layout, tried[0])
            await trio.sleep(PAUSE)
            layout = await source.renew(layout)
            continue
        if trio.current_time() >= deadline:
            raise XfsError(errno.EIO, f"inode {layout.attr.ino}: gave up after {failure}")


def read_only(layout: FileLayout) -> bool:
    return layout.xloc.update_policy is UpdatePolicy.RONLY


async def _report(session: Session, layout: FileLayout, osd: str) -> None:
    """Tell the MRC that ``osd`` did not answer (it decides whether to replace it)."""
    try:
        await session.mrc(MRC.replica_failed, ReplicaFailed(layout.xcap, layout.xloc.version, osd))
    except (XfsError, trio.TooSlowError) as e:
        log.warning("could not report OSD %s to the MRC: %s", osd, e)
